"""SigLIP and SigLIP 2: `SiglipModel`, `Siglip2Model`.

SigLIP has no CLS token; its image embedding is a multi-head attention-pooling head (one learned probe query)
over the tokens. Following the authors' code, LeGrad applies that head to each explained block's RAW output (no
`post_layernorm`) and differentiates with respect to the head's attention probabilities. The head is an
`nn.MultiheadAttention` whose returned weights are not in the autograd graph, so it is recomputed here by hand.
`score="model"` applies `post_layernorm` first, as the model itself does.

SigLIP 2 (NaFlex) takes pre-patchified images with `pixel_attention_mask` and `spatial_shapes`: each image has its
own patch grid, and padded patches are masked out of the head and of the maps.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    ZERO_SHOT,
    AttentionHandle,
    DualEncoderAdapter,
    FamilySpec,
    HubCheckpoint,
    PixelInputs,
    TextLayout,
)
from .clip import CLIP_VISION_LAYOUT
from .registry import register

_SIGLIP_SCORE = (
    "A prompt's score at block l is SigLIP's image-text cosine computed by the attention-pooling head applied to "
    "that block's output tokens: `s^l = <t, normalize(head(Z^l))>`, where `t` is the prompt's normalized text "
    "embedding; the gradient is taken with respect to the pooling head's attention probabilities, recomputed for "
    "each block."
)
_CORRECTION_NOTE = (
    '- **Null-prompt correction** (on by default, as in the authors\' code): the map of the prompt "a photo of a" '
    "is computed too, min-max normalized, and each prompt's map is set to zero wherever that null map exceeds 0.8. "
    "It masks regions that light up whatever the prompt, which say nothing about yours. Pass `correction=False` "
    "(pipeline or `explain`) to see the uncorrected map."
)
_SIGMOID_NOTE = (
    "- **Scores.** The pipeline's `score` is SigLIP's sigmoid probability for each label on its own: labels do "
    "not compete, so scores need not sum to 1. `LeGradExplainer` returns the model's `logits_per_image` in "
    "`out.scores` and the probabilities in `out.probabilities`."
)


@register
class SiglipAdapter(DualEncoderAdapter):
    spec = FamilySpec(
        name="siglip",
        display_name="SigLIP",
        model_classes=("SiglipModel",),
        base_task=ZERO_SHOT,
        model_types=("siglip",),
        default_class="SiglipModel",
        **CLIP_VISION_LAYOUT,
        prefix_tokens=0,
        score_definition=_SIGLIP_SCORE,
        reading_notes=(
            _CORRECTION_NOTE,
            _SIGMOID_NOTE,
            "- **Whole image.** The processor resizes the image to a square without cropping, so the map covers "
            "the whole picture; non-square images are squeezed for the model and the maps are stretched back to "
            "the original shape.",
        ),
        checkpoints=(
            HubCheckpoint(
                model_id="google/siglip-base-patch16-224",
                license="apache-2.0",
                native_resolution=224,
                patch_size=16,
                parameters_millions=203,
                image_tower_parameters_millions=93,
                image_size=448,
            ),
            HubCheckpoint(
                model_id="google/siglip-so400m-patch14-384",
                license="apache-2.0",
                native_resolution=384,
                patch_size=14,
                parameters_millions=878,
                image_tower_parameters_millions=428,
                image_size=384,
                image_size_note="its 27 x 27 patch grid is already as fine as a 224-pixel model's at 448",
            ),
            HubCheckpoint(  # fixed-resolution SigLIP 2 checkpoints are SigLIP models; NaFlex ones are not
                model_id="google/siglip2-base-patch16-224",
                family="siglip2",
                license="apache-2.0",
                native_resolution=224,
                patch_size=16,
                parameters_millions=375,
                image_tower_parameters_millions=93,
                image_size=448,
            ),
        ),
    )
    explains_pooling_head = True
    default_correction = True
    # SigLIP's text tower attends both ways (padding keys masked when the tokenizer gives an attention mask).
    text_layout = TextLayout(
        blocks="text_model.encoder.layers", value="self_attn.v_proj", output="self_attn.out_proj", causal=False
    )

    @property
    def head(self) -> nn.Module:
        head = getattr(self.model.vision_model, "head", None)
        if head is None:
            raise TypeError(
                f"This {type(self.model).__name__} has no attention-pooling head (`vision_use_head=False`); "
                "LeGrad for SigLIP explains that head, so such models are not supported."
            )
        return head

    @property
    def embedding_dim(self) -> int:
        return int(self.vision_config.hidden_size)

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        vision = self.model.vision_model(**pixels.model_kwargs)
        return F.normalize(vision.pooler_output.float(), dim=-1)

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        norm = self.model.vision_model.post_layernorm
        return pooling_head_readout(self.head, norm, tokens, pixels.valid_tokens, score)

    def probabilities(
        self, image_features: torch.Tensor, directions: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """SigLIP scores each prompt on its own: the sigmoid of its logit."""
        return scores.sigmoid()

    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: SigLIP's text model pools its LAST position (padding, for a short prompt)."""
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)

    def text_readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """SigLIP's text embedding [prompts, dim] from one text layer's pooled token [prompts, hidden]:
        `final_layer_norm` -> `head` (not normalized)."""
        text_model = self.model.text_model
        return text_model.head(text_model.final_layer_norm(pooled))

    def tokenizer_kwargs(self, tokenizer) -> dict[str, object]:
        # SigLIP's text tower pools the LAST token, so prompts must be padded to the full length it was trained on.
        return {"padding": "max_length", "truncation": True, "max_length": self.max_text_length(tokenizer)}


@register
class Siglip2Adapter(SiglipAdapter):
    spec = replace(
        SiglipAdapter.spec,
        name="siglip2",
        display_name="SigLIP 2",
        model_classes=("Siglip2Model",),
        model_types=("siglip2",),
        default_class="Siglip2Model",
        native_resolution=False,
        checkpoints=(),
        reading_notes=(
            _CORRECTION_NOTE,
            _SIGMOID_NOTE,
            "- **Aspect ratio.** The NaFlex processor keeps each image's aspect ratio and picks its own patch grid "
            "(up to `max_num_patches`), so the map covers the whole picture without distortion; padded patches are "
            "never part of a map.",
        ),
    )

    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        mask, shapes = extra.get("pixel_attention_mask"), extra.get("spatial_shapes")
        patch, channels = self.patch_size, self.num_channels
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 3 or mask is None or shapes is None:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(
                "Siglip2Model takes pre-patchified images: `pixel_values` [batch, max_patches, "
                f"{channels * patch * patch}] with `pixel_attention_mask` [batch, max_patches] and `spatial_shapes` "
                f"[batch, 2], as its processor returns them (got pixel_values {shape}). Pass raw images with a "
                "processor, or all three tensors."
            )
        batch, max_patches, width = pixel_values.shape
        if width != channels * patch * patch:
            raise ValueError(
                f"`pixel_values` has {width} values per patch but the model expects {channels * patch * patch} "
                f"({channels} channels x {patch}x{patch}); use the model's own processor."
            )
        if tuple(mask.shape) != (batch, max_patches) or tuple(shapes.shape) != (batch, 2):
            raise ValueError(
                f"`pixel_attention_mask` must be [{batch}, {max_patches}] and `spatial_shapes` [{batch}, 2], got "
                f"{tuple(mask.shape)} and {tuple(shapes.shape)}."
            )
        grid_shapes = [(int(h), int(w)) for h, w in shapes.tolist()]
        for index, (h, w) in enumerate(grid_shapes):
            if h < 1 or w < 1 or h * w > max_patches or int(mask[index].sum()) != h * w:
                raise ValueError(
                    f"image {index}: `spatial_shapes` {h}x{w} does not match its {int(mask[index].sum())} valid "
                    f"patches of {max_patches}; pass the processor's own outputs unchanged."
                )
        model_kwargs: dict[str, object] = {
            "pixel_values": pixel_values,
            "pixel_attention_mask": mask,
            "spatial_shapes": shapes,
        }
        image_sizes = [(h * patch, w * patch) for h, w in grid_shapes]
        return PixelInputs(model_kwargs, grid_shapes, image_sizes, valid_tokens=mask.bool())

    def processor_size_kwargs(self, image_processor, image_size: tuple[int, int]) -> dict[str, object]:
        # NaFlex keeps each image's aspect ratio within a patch budget; `image_size` sets that budget.
        height, width = image_size
        return {"max_num_patches": max(1, (height // self.patch_size) * (width // self.patch_size))}


# --- the attention-pooling head, written out ---------------------------------------------------------------------
# `nn.MultiheadAttention` returns probabilities that are not in the autograd graph; LeGrad needs the context
# (probabilities @ values) as a leaf, and the evaluation baselines need the probabilities themselves.
def pooling_head_readout(
    head: nn.Module, norm: nn.Module, tokens: torch.Tensor, valid_tokens: torch.Tensor | None, score: str
) -> tuple[torch.Tensor, AttentionHandle]:
    """(normalized head output [batch, hidden], handle on the head's attention) for one block's tokens.

    `score="legrad"` applies the head to the raw block output, as the authors' code does; `score="model"` applies
    the tower's `norm` (`post_layernorm`) first, as the model does.
    """
    if score == "model":
        tokens = norm(tokens)
    with torch.no_grad():
        probabilities, values = pooling_head_probabilities(head, tokens, valid_tokens)
        context = pooling_head_context(probabilities, values)
    context.requires_grad_(True)
    readout = F.normalize(pooling_head_output(head, context).float(), dim=-1)
    return readout, AttentionHandle(context=context, values=values, num_heads=head.attention.num_heads)


def pooling_head_probabilities(
    head: nn.Module, tokens: torch.Tensor, valid_tokens: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's probe attending over `tokens` [batch, tokens, hidden].

    Returns:
        (probabilities [batch, heads, 1, tokens], values [batch, tokens, hidden]); padded patches (`valid_tokens`
        False, SigLIP 2) get probability 0.
    """
    attention = head.attention
    batch, num_tokens, hidden = tokens.shape
    num_heads = attention.num_heads
    head_dim = hidden // num_heads
    w_query, w_key, w_value = attention.in_proj_weight.chunk(3)
    b_query, b_key, b_value = attention.in_proj_bias.chunk(3)
    query = F.linear(head.probe.expand(batch, -1, -1), w_query, b_query).view(batch, 1, num_heads, head_dim)
    key = F.linear(tokens, w_key, b_key).view(batch, num_tokens, num_heads, head_dim)
    values = F.linear(tokens, w_value, b_value)
    logits = (query.transpose(1, 2) @ key.permute(0, 2, 3, 1)) * head_dim**-0.5
    if valid_tokens is not None:
        hidden_keys = ~valid_tokens.to(logits.device)[:, None, None, :]
        logits = logits.masked_fill(hidden_keys, torch.finfo(logits.dtype).min)
    return logits.softmax(dim=-1), values


def pooling_head_context(probabilities: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A pooling head's attention context, heads concatenated as its output projection reads them.

    Args:
        probabilities: [batch, heads, queries, tokens], one row per learned query (SigLIP and AIMv2 have one,
            timm's `AttentionPoolLatent` `latent_len`).
        values: [batch, tokens, heads * head_dim].

    Returns:
        [batch, queries, heads * head_dim]: probabilities @ values per head.
    """
    batch, num_heads, num_queries, num_tokens = probabilities.shape
    hidden = values.shape[-1]
    per_head = values.view(batch, num_tokens, num_heads, hidden // num_heads).transpose(1, 2)
    return (probabilities @ per_head).transpose(1, 2).reshape(batch, num_queries, hidden)


def pooling_head_output(head: nn.Module, context: torch.Tensor) -> torch.Tensor:
    """The head's output [batch, hidden] from its attention context: out_proj, then the residual MLP."""
    pooled = head.attention.out_proj(context)
    return (pooled + head.mlp(head.layernorm(pooled)))[:, 0]
