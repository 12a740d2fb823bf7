"""OWL-ViT and OWLv2: `OwlViTForObjectDetection` and `Owlv2ForObjectDetection`, open-vocabulary detectors.

Each patch token predicts one box (`box_head`) and scores it against every text query (`class_head`). The score
of box j for query q at block l is the class head's logit of patch j computed from block l's tokens Z exactly as
the model computes it from its last block: `post_layernorm`, the CLS merge `embeds[:, 1:] * embeds[:, :1]`,
`layer_norm`, then the class head with the query's embedding from the text tower (its normalized `text_embeds`):
`(<normalize(dense0(x_j)), normalize(t_q)> + logit_shift(x_j)) * (elu(logit_scale(x_j)) + 1)`. The readout is
every (patch, query) logit, patch-major (`transformers_legrad.detection`); a map explains one of them. Boxes are
the model's own, from its last block. There is no pooling, so `score="model"` and `score="legrad"` are the same.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .base import (
    ZERO_SHOT_DETECTION,
    FamilyAdapter,
    FamilySpec,
    HubCheckpoint,
    PixelInputs,
    TextInputs,
    execution_device,
)
from .registry import register


def _layout(trunk: str) -> dict[str, str]:
    return {
        "vision_config": "config.vision_config",
        "blocks": f"{trunk}.vision_model.encoder.layers",
        "attention": "self_attn",
        "value": "self_attn.v_proj",
        "output": "self_attn.out_proj",
        "mlp_output": "mlp.fc2",
    }


_SCORE = (
    "A map explains one detection: box j (predicted by patch j) for text query q. Its score at block l is the class "
    "head's logit of patch j computed from that block's output tokens exactly as {name} computes it from its last "
    "block: `post_layernorm`, the CLS merge (each patch embedding times the CLS embedding), `layer_norm`, then "
    "`(<normalize(dense0(x_j)), t_q> + logit_shift(x_j)) * (elu(logit_scale(x_j)) + 1)` with `t_q` the query's "
    "normalized text embedding."
)
_NOTES = (
    "- **Which boxes.** By default each query's highest-scoring box is explained; `boxes=` picks box indices and "
    "`threshold=` explains every (box, query) pair whose score is above it, as the `zero-shot-object-detection` "
    "pipeline lists them. The box comes with its map (`out.boxes`, drawn on the pipeline's overlay).",
    "- **Scores.** The pipeline's `score` is the sigmoid of the box's logit for the query, as in "
    "`zero-shot-object-detection`: queries do not compete. `out.scores` holds the logits.",
)


class _OwlAdapter(FamilyAdapter):
    """The OWL detectors; `trunk` names the model's image-text model (`owlvit` or `owlv2`)."""

    is_detector = True
    trunk: ClassVar[str]

    @property
    def _base(self) -> nn.Module:
        return getattr(self.model, self.trunk)

    @property
    def embedding_dim(self) -> int:
        """The width of a query embedding: the class head's `dense0` output (the text projection's width)."""
        return int(self.model.class_head.dense0.out_features)

    @property
    def has_text_tower(self) -> bool:
        return True

    def text_features(self, text: TextInputs) -> torch.Tensor:
        base = self._base
        device = execution_device(base.text_model, self.model)
        mask = None if text.attention_mask is None else text.attention_mask.to(device)
        return base.get_text_features(input_ids=text.input_ids.to(device), attention_mask=mask).pooler_output

    def _patch_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, patches, hidden]: `image_embedder`'s merged patch embeddings from block output tokens."""
        embeds = self._base.vision_model.post_layernorm(tokens)
        class_token = torch.broadcast_to(embeds[:, :1, :], embeds[:, :-1].shape)
        return self.model.layer_norm(embeds[:, 1:, :] * class_token)

    def _logits(self, patch_embeds: torch.Tensor, pixels: PixelInputs) -> torch.Tensor:
        """The class head's logits [batch, patches * queries] (patch-major) against `pixels.queries`."""
        if pixels.queries is None:
            raise ValueError(
                f"{type(self.model).__name__} scores patches against text queries: explain it with `text=[...]` "
                "(or `text_embeds`), which sets `pixels.queries`."
            )
        batch = patch_embeds.shape[0]
        queries = pixels.queries.to(device=patch_embeds.device, dtype=patch_embeds.dtype)
        logits, _ = self.model.class_head(patch_embeds, queries.unsqueeze(0).expand(batch, -1, -1), None)
        return logits.float().flatten(1)

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        """The final logits [batch, patches * queries]; sets `pixels.boxes` to the model's predicted boxes."""
        vision = self._base.vision_model(**pixels.model_kwargs)
        embeds = self._patch_embeddings(vision.last_hidden_state)
        (height, width), batch = pixels.grid_shapes[0], embeds.shape[0]
        feature_map = embeds.reshape(batch, height, width, embeds.shape[-1])
        interpolate = bool(pixels.model_kwargs.get("interpolate_pos_encoding", False))
        pixels.boxes = self.model.box_predictor(embeds, feature_map, interpolate_pos_encoding=interpolate)
        return self._logits(embeds, pixels)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        return self._logits(self._patch_embeddings(tokens), pixels)

    def probabilities(
        self, image_features: torch.Tensor, directions: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """The detection score the pipeline reports: the sigmoid of the logit (0 on padding maps)."""
        explained = (directions != 0).any(dim=-1).to(scores.device)
        return torch.where(explained, scores.float().sigmoid(), 0.0)


@register
class OwlViTAdapter(_OwlAdapter):
    trunk = "owlvit"
    spec = FamilySpec(
        name="owlvit",
        display_name="OWL-ViT",
        model_classes=("OwlViTForObjectDetection",),
        base_task=ZERO_SHOT_DETECTION,
        model_types=("owlvit",),
        default_class="OwlViTForObjectDetection",
        **_layout("owlvit"),
        score_definition=_SCORE.format(name="OWL-ViT"),
        reading_notes=_NOTES,
    )


@register
class Owlv2Adapter(_OwlAdapter):
    trunk = "owlv2"
    spec = FamilySpec(
        name="owlv2",
        display_name="OWLv2",
        model_classes=("Owlv2ForObjectDetection",),
        base_task=ZERO_SHOT_DETECTION,
        model_types=("owlv2",),
        default_class="Owlv2ForObjectDetection",
        **_layout("owlv2"),
        score_definition=_SCORE.format(name="OWLv2"),
        reading_notes=(
            *_NOTES,
            "- **Padding.** OWLv2's processor pads the image to a square (bottom and right) before resizing it to "
            "960 px: the maps and `out.boxes` cover the padded square; the pipeline's boxes are in the original "
            "image's pixels, as `zero-shot-object-detection` gives them.",
        ),
        # Parameter counts: the model built on the meta device with `Owlv2Config`'s defaults (the base
        # architecture: ViT-B/16 vision tower, 512-wide text tower) at 960 px, rounded.
        checkpoints=(
            HubCheckpoint(
                model_id="google/owlv2-base-patch16-ensemble",
                license="apache-2.0",
                native_resolution=960,
                patch_size=16,
                parameters_millions=155,
                image_tower_parameters_millions=88,
                image_size=960,
                image_size_note=(
                    "its processor pads every image to a square and resizes it to 960 x 960, the size OWLv2 was "
                    "trained at (60 x 60 patches, one box each)"
                ),
            ),
        ),
    )
