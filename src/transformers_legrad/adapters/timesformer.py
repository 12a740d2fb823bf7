"""TimeSformer (`TimesformerForVideoClassification`): divided space-time attention, each attention explained exactly.

A TimeSformer video [frames, channels, H, W] gives one token per (frame, patch) after a CLS token, ordered
[height, width, frame] (the patch position outer, the frame inner). Each divided space-time block runs two
attentions: a temporal one over each patch position's frames (sequences: batch x h x w, keys: that position's T
frames), then a spatial one over each frame's patches (sequences: batch x frames, keys: a per-frame copy of the CLS
token and that frame's h x w patches; the copies' outputs are averaged back into the one CLS), then the MLP.

The score is LeGrad's, unchanged: block l's score is `classifier(layernorm(mean of all block-l tokens))[class]`
(`score="legrad"`; `score="model"`: `classifier(layernorm(tokens)[:, 0])`, the model's own CLS pooling). LeGrad's
rule applied to an attention as it is, `E^l` = mean over heads and query rows of ReLU(dS/dA^l), is exact for either
attention; the two are never mixed:

- `attention="spatial"` (the default): dS/dA of each block's spatial attention. Each (video, frame) sequence gives a
  map of its frame's patches (its query rows averaged, the frame's CLS copy dropped as a key), so a block's map is a
  (frames, h, w) grid: the video's map, heatmaps [batch, classes, frames, H, W] as for VideoMAE and ViViT.
- `attention="temporal"`: dS/dA of each block's temporal attention. Each (video, patch position) sequence gives the
  relevance of each of its T frames, laid out on the same (frames, h, w) grid: where in a frame and in which frame
  the class is read across time. Its mean over (h, w), `out.grid_maps.mean(dim=(-2, -1))` [batch, classes,
  frames], is the relevance of each frame.

The blocks split their tokens with `config.num_frames` and `config.image_size // config.patch_size`, so a video is
explained at exactly that input; other frame counts or sizes get an error naming the expected one.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .base import PixelInputs
from .registry import register
from .video import VIDEO_NOTES, VivitClassifierAdapter

#: The attentions of a divided space-time block that `attention=` can explain.
ATTENTIONS = ("spatial", "temporal")
TIMESFORMER_NOTES = (
    '- **Divided space-time attention.** `attention="spatial"` (default) explains each block\'s spatial attention '
    '(one sequence per frame); `attention="temporal"` its temporal attention (one sequence per patch position), '
    "whose `grid_maps.mean(dim=(-2, -1))` is the relevance of each frame.",
    *VIDEO_NOTES,
)


@register
class TimesformerClassifierAdapter(VivitClassifierAdapter):
    """`TimesformerForVideoClassification`: CLS first, tokens [h, w, t]; LeGrad reads the mean of all tokens.

    Args:
        model: a `TimesformerForVideoClassification` with `attention_type="divided_space_time"`.
        attention: which attention of each block to explain, "spatial" (per-frame maps) or "temporal" (the relevance
            of each frame, per patch position).
    """

    spec = replace(
        VivitClassifierAdapter.spec,
        name="timesformer",
        display_name="TimeSformer",
        model_classes=("TimesformerForVideoClassification",),
        model_types=("timesformer",),
        blocks="timesformer.encoder.layer",
        attention="attention.attention",
        value="attention.attention.qkv",
        output="attention.output.dense",
        fused_qkv=True,
        mlp_output="output.dense",
        prefix_tokens=1,
        reading_notes=TIMESFORMER_NOTES,
    )

    def __init__(self, model: nn.Module, *, attention: str = "spatial", **options: object) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(
                f"`attention` must be one of {', '.join(map(repr, ATTENTIONS))} (which attention of each divided "
                f"space-time block to explain), got {attention!r}."
            )
        attention_type = getattr(model.config, "attention_type", None)
        if attention_type != "divided_space_time":
            raise TypeError(
                f"{type(model).__name__} with attention_type={attention_type!r} is not explained: only "
                "'divided_space_time' (TimesformerConfig's default) is."
            )
        self.explained_attention = attention
        super().__init__(model, **options)  # any other option is unknown: the base says so

    # --- the explained attention ---------------------------------------------------------------------------
    def attention_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module, int]:
        """The fused Q/K/V projection and output projection of the block's spatial or temporal attention."""
        if self.explained_attention == "spatial":
            return super().attention_projections(block)
        temporal = block.temporal_attention
        return temporal.attention.qkv, temporal.output.dense, self.num_heads

    def attention_relevance_to_tokens(self, relevance: torch.Tensor, pixels: PixelInputs) -> torch.Tensor:
        """[batch, prompts, 1 + frames * h * w], frame-major, from one row per spatial or temporal sequence.

        Args:
            relevance: spatial: [batch * frames, prompts, 1 + h * w] (the frame's CLS copy first); temporal:
                [batch * h * w, prompts, frames], the patch positions row-major, as the model reshapes them.
            pixels: the videos, whose grid is (frames, h, w).

        Returns:
            float32 [batch, prompts, 1 + frames * h * w]: the CLS slot (spatial: the mean over frames of the CLS
            copies' relevance; temporal: 0, the CLS is no key of it), dropped from maps like every prefix token;
            then the (frame, row, column) tokens.
        """
        batch = pixels.batch_size
        frames, height, width = pixels.grid_shapes[0]
        prompts = relevance.shape[1]
        if self.explained_attention == "spatial":
            per_frame = relevance.view(batch, frames, prompts, 1 + height * width).transpose(1, 2)
            cls, patches = per_frame[..., 0].mean(dim=2, keepdim=True), per_frame[..., 1:]
        else:
            per_position = relevance.view(batch, height * width, prompts, frames)
            patches = per_position.permute(0, 2, 3, 1)  # [batch, prompts, frames, positions]
            cls = patches.new_zeros(batch, prompts, 1)
        return torch.cat([cls, patches.reshape(batch, prompts, frames * height * width)], dim=-1)

    # --- geometry ------------------------------------------------------------------------------------------
    @property
    def tubelet_size(self) -> tuple[int, int, int]:
        """(frames, height, width) of one token: one frame's patch."""
        return 1, self.patch_size, self.patch_size

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.patch_size)

    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        """Validate videos [batch, config.num_frames, channels, image_size, image_size]; grid (frames, h, w)."""
        if isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 5:
            frames = pixel_values.shape[1]
            if frames != self.num_frames:
                raise ValueError(
                    f"{type(self.model).__name__} takes {self.num_frames} frames per video (its blocks split the "
                    f"tokens into `config.num_frames` frames), got {frames}; sample them from the clip: "
                    "`media.sample_frames(frames, model.config.num_frames)`."
                )
        return super().prepare_pixels(pixel_values, **extra)
