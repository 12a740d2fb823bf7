"""Video classifiers over tubelet tokens: `VideoMAEForVideoClassification` and `VivitForVideoClassification`.

A video [frames, channels, H, W] is cut into tubelets of `t` frames by `p x p` pixels, one token each, ordered
[time, height, width]; so a map lies on a (frames / t, H / p, W / p) grid, and its heatmap is upsampled along
frames, height and width (trilinear) to [frames, H, W]. The math is LeGrad's, unchanged: each block's score is the
classifier's logit computed from that block's output tokens, `E^l` the mean over heads and query rows of
ReLU(dS/dA^l) over the block's global self-attention, with the prefix keys (ViViT's CLS) dropped.

- VideoMAE has no CLS token. With `use_mean_pooling` (the published checkpoints) its head is
  `classifier(fc_norm(mean of all tokens))`, which is already LeGrad's readout, so `score="legrad"` and
  `score="model"` agree. Without it the model reads `classifier(layernorm(tokens)[:, 0])`, the first tubelet;
  LeGrad's readout is then `classifier(layernorm(mean Z))`, the model's own `score="model"`.
- ViViT reads its CLS token, `classifier(layernorm(tokens)[:, 0])`; LeGrad's readout is
  `classifier(layernorm(mean Z))` over all tokens, CLS included.

Both models have fixed position embeddings for `config.num_frames` frames of `config.image_size` pixels (VideoMAE's
are sinusoidal of a fixed length, ViViT's interpolation assumes a square grid of one frame), so they are explained
at exactly that input; other sizes get an error naming the expected one. When `num_frames` is not a multiple of
the tubelet's frames, the model's Conv3d reads no tubelet from the last frames; the heatmap places each tubelet at
its frames' centre and holds the last tubelet's value over them (`maps.heatmaps_from_grids`' patch geometry).

TimeSformer (`TimesformerForVideoClassification`) has its own adapter (`adapters/timesformer.py`): its divided
space-time blocks hold two attentions, a temporal one over each patch position's frames and then a spatial one over
each frame's patches (with a copy of the CLS token per frame), and its tokens are ordered [height, width, frame].
LeGrad's rule is applied to one of them as it is, chosen with `attention="spatial"` (per-frame maps, the default)
or `attention="temporal"` (the relevance of each frame per patch position); the two are never combined.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .base import VIDEO_CLASSIFICATION, FamilyAdapter, FamilySpec, HubCheckpoint, PixelInputs
from .registry import register

VIDEO_SCORE = (
    "A class's score at block l is the classifier's logit for that class computed from that block's output "
    "tokens: `s^l = classifier(norm(mean of all tokens))[class]`, where `norm` is the layernorm the model puts "
    "before its head (the recipe of the LeGrad paper transposed to a video classification head)."
)
VIDEO_NOTES = (
    "- **Tubelets.** The map has one value per tubelet (`tubelet_size` frames by `patch_size` pixels); "
    "`grid_maps` are [batch, classes, frames / tubelet, H / patch, W / patch] and `heatmaps` [batch, classes, "
    "frames, H, W], upsampled along time too.",
    "- **Fixed input.** The model's position embeddings cover `config.num_frames` frames at `config.image_size`: "
    "sample that many frames from the clip; the processor resizes them.",
    "- **Classes, not prompts.** Without `targets` the top-1 predicted class is explained; `targets` takes class "
    "ids or label names from `model.config.id2label`.",
)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


@register
class VideoMAEClassifierAdapter(FamilyAdapter):
    """`VideoMAEForVideoClassification`: `classifier(fc_norm(mean of all tokens))`, no CLS token."""

    spec = FamilySpec(
        name="videomae",
        display_name="VideoMAE",
        model_classes=("VideoMAEForVideoClassification",),
        base_task=VIDEO_CLASSIFICATION,
        model_types=("videomae",),
        blocks="videomae.encoder.layer",
        attention="attention.attention",
        value="attention.attention.value",
        output="attention.output.dense",
        mlp_output="output.dense",
        prefix_tokens=0,
        score_definition=VIDEO_SCORE,
        reading_notes=VIDEO_NOTES,
        # The license is as recalled, not checked against the Hub here. The parameter count is computed from the
        # architecture on the meta device (VideoMAEConfig defaults, 400 Kinetics classes, mean pooling).
        checkpoints=(
            HubCheckpoint(
                "MCG-NJU/videomae-base-finetuned-kinetics",
                license="cc-by-nc-4.0",
                native_resolution=224,
                patch_size=16,
                parameters_millions=86.5,
                image_size=224,
                input_grid="16 frames of 224 x 224 pixels; 8 x 14 x 14 tubelets of 2 frames x 16 x 16 pixels",
            ),
        ),
    )

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.model, self.model.base_model_prefix)

    # --- geometry ------------------------------------------------------------------------------------------
    @property
    def tubelet_size(self) -> tuple[int, int, int]:
        """(frames, height, width) of one tubelet token."""
        height, width = _pair(self.vision_config.patch_size)
        return int(self.vision_config.tubelet_size), height, width

    @property
    def patch_size(self) -> int:
        return self.tubelet_size[1]

    @property
    def num_frames(self) -> int:
        """The frames the position embeddings were built for (`config.num_frames`)."""
        return int(self.vision_config.num_frames)

    @property
    def native_image_size(self) -> tuple[int, int]:
        return _pair(self.vision_config.image_size)

    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        """Validate videos [batch, frames, channels, height, width]; their grid is (frames / t, H / p, W / p)."""
        model_name = type(self.model).__name__
        if any(value is not None for value in extra.values()):
            raise ValueError(f"{model_name} takes only `pixel_values` [batch, frames, channels, height, width].")
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 5:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            hint = (
                " That is one image per row; a video model takes clips: pass `videos=` (a list of frames) or "
                "stack the frames on a frames axis."
                if isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 4
                else ""
            )
            raise ValueError(
                f"{model_name} takes `pixel_values` [batch, {self.num_frames} frames, {self.num_channels}, height, "
                f"width], got {shape}.{hint}"
            )
        batch, frames, channels, height, width = pixel_values.shape
        if batch == 0:
            raise ValueError("`pixel_values` holds no video (batch size 0).")
        if channels != self.num_channels:
            raise ValueError(
                f"`pixel_values` has {channels} channels but {model_name} expects {self.num_channels} (shape "
                f"{tuple(pixel_values.shape)}, read as [batch, frames, channels, height, width])."
            )
        tubelet_frames, patch_height, patch_width = self.tubelet_size
        if frames != self.num_frames:
            raise ValueError(
                f"{model_name} takes {self.num_frames} frames per video, exactly (`config.num_frames`: its position "
                f"embeddings are fixed to {self.num_frames // tubelet_frames} tubelets of {tubelet_frames} frames), "
                f"got {frames}; sample them from the clip: `media.sample_frames(frames, model.config.num_frames)`."
            )
        if (height, width) != self.native_image_size:
            native_height, native_width = self.native_image_size
            raise ValueError(
                f"{model_name} takes frames of {native_height}x{native_width} pixels (its position embeddings are "
                f"fixed), got {height}x{width}; let the processor resize them (no `image_size`)."
            )
        grid = (frames // tubelet_frames, height // patch_height, width // patch_width)
        geometry = tuple((size, size) for size in self.tubelet_size)  # tubelets tile the frames they cover
        return PixelInputs(
            {"pixel_values": pixel_values}, [grid] * batch, [(frames, height, width)] * batch, patch_geometry=geometry
        )

    # --- readout -------------------------------------------------------------------------------------------
    @property
    def final_norm(self) -> nn.Module:
        """The layernorm before the head: `fc_norm` (mean pooling) or the backbone's `layernorm` (first token)."""
        fc_norm = getattr(self.model, "fc_norm", None)
        return fc_norm if fc_norm is not None else self.backbone.layernorm

    @property
    def model_pools_the_mean(self) -> bool:
        return getattr(self.model, "fc_norm", None) is not None

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad" or self.model_pools_the_mean

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        return self.model(**pixels.model_kwargs).logits.float()

    def pooled_tokens(self, tokens: torch.Tensor, score: str) -> torch.Tensor:
        """The feature the head reads [batch, hidden]: the norm of the token mean, or the model's own pooling."""
        if score == "model" and not self.model_pools_the_mean:
            return self.final_norm(tokens)[:, 0]
        return self.final_norm(tokens.mean(dim=1))

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        return self.model.classifier(self.pooled_tokens(tokens, score)).float()


@register
class VivitClassifierAdapter(VideoMAEClassifierAdapter):
    """`VivitForVideoClassification`: `classifier(layernorm(tokens)[:, 0])`, CLS first; LeGrad reads the mean."""

    spec = replace(
        VideoMAEClassifierAdapter.spec,
        name="vivit",
        display_name="ViViT",
        model_classes=("VivitForVideoClassification",),
        model_types=("vivit",),
        blocks="vivit.layers",
        attention="attention",
        value="attention.v_proj",
        output="attention.o_proj",
        mlp_output="mlp.fc2",
        prefix_tokens=1,
        # The license is as recalled, not checked against the Hub here. The parameter count is computed from the
        # architecture on the meta device (VivitConfig defaults, which are this checkpoint's, 400 Kinetics classes).
        checkpoints=(
            HubCheckpoint(
                "google/vivit-b-16x2-kinetics400",
                license="mit",
                native_resolution=224,
                patch_size=16,
                parameters_millions=89.0,
                image_size=224,
                input_grid="32 frames of 224 x 224 pixels; 16 x 14 x 14 tubelets of 2 frames x 16 x 16 pixels",
            ),
        ),
    )

    @property
    def tubelet_size(self) -> tuple[int, int, int]:
        frames, height, width = self.vision_config.tubelet_size
        return int(frames), int(height), int(width)

    @property
    def final_norm(self) -> nn.Module:
        return self.backbone.layernorm

    @property
    def model_pools_the_mean(self) -> bool:
        return False
