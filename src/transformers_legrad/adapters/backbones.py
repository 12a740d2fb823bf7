"""Backbones explained along a direction: `CLIPVisionModel`, `SiglipVisionModel`, `ViTModel`, `Dinov2Model`,
`Dinov2WithRegistersModel`, `DINOv3ViTModel`.

These models have neither a text tower nor a classifier: what to explain is a direction in their pooled feature
space, given by the user (`explain(directions=T)`, T [K, dim]: a linear probe's rows, a class's mean feature) or
taken from reference images (`explain(reference_images=[...])`: each reference's own normalized pooled
embedding). Every readout is L2-normalized, so the score of direction k is a cosine, `<readout, d_k>`.

- `score="legrad"`: the model's final norm on the mean over ALL tokens of a block's output,
  `normalize(final_norm(mean Z))` (as CLIP's readout is in the authors' code); SigLIP with its attention-pooling
  head: `normalize(head(Z))` on the raw block output, differentiated through the head's attention (as
  `SiglipAdapter`); SigLIP without a head: `normalize(post_layernorm(mean Z))`.
- `score="model"` and the final readout (what `scores` and reference directions come from): the model's own
  pooled feature, normalized: the CLS token after the final norm (CLIP's `pooler_output`, DINOv2's and DINOv3's
  `pooler_output`, ViT's `last_hidden_state[:, 0]`: ViT's `pooler` (dense + tanh) is left out, as most ViT
  backbone checkpoints ship it untrained); SigLIP's head output, or without a head the mean of the normalized
  tokens (as `SiglipForImageClassification` pools).

There is no softmax over directions: `probabilities` is the cosine itself.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import FEATURE_EXTRACTION, AttentionHandle, FamilyAdapter, FamilySpec, PixelInputs
from .classifiers import VIT_LAYOUT
from .clip import CLIP_VISION_LAYOUT
from .registry import register
from .siglip import pooling_head_readout

BACKBONE_SCORE = (
    "A direction's score at block l is the cosine between the direction `d` (a given feature vector, or a "
    "reference image's own normalized pooled embedding) and the model's final norm applied to the mean of that "
    "block's output tokens: `s^l = <d, normalize(final_norm(mean of all tokens))>`."
)
BACKBONE_NOTES = (
    "- **Directions, not prompts or classes.** A backbone has no text tower and no classifier: give `directions` "
    "[K, dim] in its pooled feature space (a linear probe's rows, a class's mean feature) or `reference_images`, "
    "whose own pooled embeddings become the directions: the map shows where the image holds what the reference "
    "shows.",
    "- **Scores.** `score` is the cosine between the image's own normalized pooled embedding and the direction; "
    "there is no softmax over directions, so `probabilities` holds the same cosine.",
)
#: A backbone's own layout: the blocks and vision config on the model itself (no `vision_model.` prefix).
CLIP_BACKBONE_LAYOUT = {**CLIP_VISION_LAYOUT, "vision_config": "config", "blocks": "encoder.layers"}


class BackboneAdapter(FamilyAdapter):
    """Base of the backbone adapters: normalized readouts, directions instead of prompts or classes.

    A subclass names its final norm (`final_norm`, a path from the model) and writes `pooled_output`, the model's
    own pooled feature of its forward's output; the token-mean readout follows from them.
    """

    is_backbone = True
    final_norm: ClassVar[str] = "layernorm"

    @property
    def norm(self) -> nn.Module:
        return self.model.get_submodule(self.final_norm)

    @property
    def embedding_dim(self) -> int:
        """The width of the pooled feature, which a direction must have."""
        return int(self.vision_config.hidden_size)

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad"

    def pooled_output(self, output) -> torch.Tensor:
        """The model's own pooled feature [batch, dim] from its forward's output (CLS after the final norm)."""
        return output.last_hidden_state[:, 0]

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        return F.normalize(self.pooled_output(self.model(**pixels.model_kwargs)).float(), dim=-1)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        pooled = self.norm(tokens)[:, 0] if score == "model" else self.norm(tokens.mean(dim=1))
        return F.normalize(pooled.float(), dim=-1)

    def probabilities(
        self, image_features: torch.Tensor, directions: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """The cosine itself: directions do not compete, there is no softmax over them."""
        return scores


def _spec(name: str, display_name: str, model_class: str, **fields) -> FamilySpec:
    return FamilySpec(
        **{
            "name": name,
            "display_name": display_name,
            "model_classes": (model_class,),
            "base_task": FEATURE_EXTRACTION,
            "default_class": model_class if fields.get("model_types") else None,
            "score_definition": BACKBONE_SCORE,
            "reading_notes": BACKBONE_NOTES,
            **fields,
        }
    )


@register
class CLIPVisionAdapter(BackboneAdapter):
    """`CLIPVisionModel`: `post_layernorm` of the mean token; its own pooling is `post_layernorm(CLS)`."""

    spec = _spec(
        "clip_vision",
        "CLIP vision tower",
        "CLIPVisionModel",
        model_types=("clip_vision_model",),
        **CLIP_BACKBONE_LAYOUT,
    )
    final_norm = "post_layernorm"

    def pooled_output(self, output) -> torch.Tensor:
        return output.pooler_output


class OptionalHeadBackboneAdapter(BackboneAdapter):
    """A vision tower that comes with an attention-pooling head `model.head` or without one (SigLIP's, AIMv2's).

    With the head, LeGrad differentiates the head's attention (`pooling_head_attention`, the family's own) and the
    model's pooling is the head's output; without it, each block's self-attention through `final_norm` of the mean
    token, and the model's pooling is the mean of its normalized output tokens (it has none of its own).
    """

    @property
    def has_head(self) -> bool:
        return getattr(self.model, "head", None) is not None

    @property
    def explains_pooling_head(self) -> bool:  # per model: such towers come with or without the head
        return self.has_head

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad" and not self.has_head

    def pooled_output(self, output) -> torch.Tensor:
        return output.pooler_output if self.has_head else output.last_hidden_state.mean(dim=1)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        if score == "model":  # the model's own pooling without a head: the mean of the normalized tokens
            return F.normalize(self.norm(tokens).mean(dim=1).float(), dim=-1)
        return F.normalize(self.norm(tokens.mean(dim=1)).float(), dim=-1)


@register
class SiglipVisionAdapter(OptionalHeadBackboneAdapter):
    """`SiglipVisionModel`, with its attention-pooling head (explained through the head's attention, as
    `SiglipAdapter`) or without (`vision_use_head=False`: `post_layernorm` of the mean token)."""

    spec = _spec(
        "siglip_vision",
        "SigLIP vision tower",
        "SiglipVisionModel",
        model_types=("siglip_vision_model",),
        **CLIP_BACKBONE_LAYOUT,
        prefix_tokens=0,
        score_definition=BACKBONE_SCORE
        + (
            " With its attention-pooling head (`vision_use_head=True`, the default) the readout is that head applied "
            "to the block's raw output tokens, `normalize(head(Z^l))`, and the gradient is taken with respect to the "
            "head's attention probabilities, as for SigLIP."
        ),
    )
    final_norm = "post_layernorm"

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        return pooling_head_readout(self.model.head, self.norm, tokens, pixels.valid_tokens, score)


@register
class ViTBackboneAdapter(BackboneAdapter):
    """`ViTModel`: `layernorm` of the mean token; its own pooling is `layernorm(CLS)` (the `pooler` is not used)."""

    spec = _spec("vit_backbone", "ViT backbone", "ViTModel", blocks="layers", **VIT_LAYOUT)


class _DinoBackboneAdapter(BackboneAdapter):
    """DINOv2-style backbones: CLS (+ registers) before the patches, position embeddings always interpolated."""

    @property
    def native_image_size(self) -> tuple[int, int] | None:
        return None  # the model interpolates its position embeddings itself (DINOv3: RoPE); it takes no flag


@register
class Dinov2BackboneAdapter(_DinoBackboneAdapter):
    """`Dinov2Model`: `layernorm` of the mean token; its own pooling is `layernorm(CLS)`."""

    spec = _spec("dinov2_backbone", "DINOv2 backbone", "Dinov2Model", blocks="encoder.layer", **VIT_LAYOUT)

    def readout_is_token_mean(self, score: str) -> bool:
        # The SwiGLU MLP's last projection is not `mlp.fc2`: the engine then takes the full backward.
        return score == "legrad" and not getattr(self.vision_config, "use_swiglu_ffn", False)


@register
class Dinov2WithRegistersBackboneAdapter(Dinov2BackboneAdapter):
    """`Dinov2WithRegistersModel`: as DINOv2, with register tokens after CLS (never part of a map)."""

    spec = _spec(
        "dinov2_with_registers_backbone",
        "DINOv2 with registers backbone",
        "Dinov2WithRegistersModel",  # no model type: "dinov2_with_registers" configs are the classifier family's
        blocks="encoder.layer",
        register_tokens="num_register_tokens",
        **VIT_LAYOUT,
    )


@register
class DINOv3ViTBackboneAdapter(_DinoBackboneAdapter):
    """`DINOv3ViTModel`: RoPE on the patch tokens, registers after CLS, final `norm`; MLP output `down_proj`."""

    spec = _spec(
        "dinov3_vit",
        "DINOv3 ViT",
        "DINOv3ViTModel",
        model_types=("dinov3_vit",),
        blocks="model.layer",
        register_tokens="num_register_tokens",
        **{**VIT_LAYOUT, "mlp_output": "mlp.down_proj"},
    )
    final_norm = "norm"
