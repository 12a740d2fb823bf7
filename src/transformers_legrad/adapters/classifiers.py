"""ViT-family image classifiers: ViT, DeiT (with or without teacher head), DINOv2 and ViT-MSN.

LeGrad's recipe transposed to a classification head: each explained block's output tokens go through the model's
final layernorm and head with the CLS feature replaced by the mean over ALL tokens (as CLIP's readout uses the
token mean), and the score of class c is its logit. Where a head reads more than the CLS token, the other inputs
are kept as the model computes them: DeiT's distillation head also reads the token mean, DINOv2's head reads
[mean-all feature, mean of normalized patch tokens]. `score="model"` uses the model's own pooling exactly.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .base import IMAGE_CLASSIFICATION, FamilyAdapter, FamilySpec, HubCheckpoint, PixelInputs
from .registry import register

CLASSIFIER_SCORE = (
    "A class's score at block l is the classifier's logit for that class computed from that block's output "
    "tokens: `s^l = classifier(layernorm(mean of all tokens))[class]` (the recipe of the LeGrad paper transposed "
    "to a classification head)."
)
CLASSIFIER_NOTES = (
    "- **Classes, not prompts.** Without `targets` the pipeline explains the `top_k` most probable classes (default "
    "1) and `explain` the top-1 class; `targets` takes class ids or label names from `model.config.id2label`.",
    "- **Scores.** The pipeline's `score` is the softmax probability over all classes, as in "
    "`image-classification`; `LeGradExplainer` returns the class logits in `out.scores`.",
    "- **Processor geometry.** The map covers what the processor shows the model: if it center-crops, the "
    "cropped-away parts of the image are blank (zero) in the pipeline's `heatmap` and `overlay`.",
)
#: The card's reason to explain a classifier fine-tuned at 224 px at its native size.
FINE_TUNED_AT_224 = (
    "the classification head was fine-tuned at 224 x 224; at another size the class scores being explained (and "
    "possibly the top class) change"
)
#: The layout of transformers' refactored ViT family (`vit.layers[i].attention.{q,k,v,o}_proj`, `mlp.fc2`).
VIT_LAYOUT = {
    "vision_config": "config",
    "attention": "attention",
    "value": "attention.v_proj",
    "output": "attention.o_proj",
    "mlp_output": "mlp.fc2",
}


@register
class ViTClassifierAdapter(FamilyAdapter):
    """`ViTForImageClassification`: `classifier(layernorm(tokens)[:, 0])`."""

    spec = FamilySpec(
        name="vit",
        display_name="ViT",
        model_classes=("ViTForImageClassification",),
        base_task=IMAGE_CLASSIFICATION,
        model_types=("vit",),
        blocks="vit.layers",
        **VIT_LAYOUT,
        score_definition=CLASSIFIER_SCORE,
        reading_notes=CLASSIFIER_NOTES,
        checkpoints=(
            HubCheckpoint(
                model_id="google/vit-base-patch16-224",
                license="apache-2.0",
                native_resolution=224,
                patch_size=16,
                parameters_millions=87,
                image_tower_parameters_millions=86,
                image_size=224,
                image_size_note=FINE_TUNED_AT_224,
            ),
        ),
    )

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.model, self.model.base_model_prefix)

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad"

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        return self.model(**pixels.model_kwargs).logits.float()

    def pooled_tokens(self, tokens: torch.Tensor, score: str) -> torch.Tensor:
        """The feature that stands where the model's CLS feature stands: [batch, hidden]."""
        if score == "model":
            return self.backbone.layernorm(tokens)[:, 0]
        return self.backbone.layernorm(tokens.mean(dim=1))

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        return self.model.classifier(self.pooled_tokens(tokens, score)).float()


DEIT_SPEC = replace(
    ViTClassifierAdapter.spec,
    name="deit",
    display_name="DeiT",
    model_classes=("DeiTForImageClassification",),
    model_types=("deit",),
    blocks="deit.layers",
    prefix_tokens=2,
    checkpoints=(),
)


@register
class DeiTAdapter(ViTClassifierAdapter):
    """`DeiTForImageClassification`: like ViT, but the sequence holds CLS + distillation token."""

    spec = DEIT_SPEC


@register
class DeiTWithTeacherAdapter(ViTClassifierAdapter):
    """`DeiTForImageClassificationWithTeacher`: CLS + distillation token, logits averaged over two heads."""

    spec = replace(DEIT_SPEC, model_classes=("DeiTForImageClassificationWithTeacher",))

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        if score == "model":
            normalized = self.backbone.layernorm(tokens)
            cls_feature, distillation_feature = normalized[:, 0], normalized[:, 1]
        else:
            cls_feature = distillation_feature = self.backbone.layernorm(tokens.mean(dim=1))
        logits = self.model.cls_classifier(cls_feature) + self.model.distillation_classifier(distillation_feature)
        return (logits / 2).float()


@register
class Dinov2ClassifierAdapter(ViTClassifierAdapter):
    """`Dinov2ForImageClassification`: `classifier(cat[CLS, mean of patch tokens])` after the final layernorm."""

    spec = replace(
        ViTClassifierAdapter.spec,
        name="dinov2",
        display_name="DINOv2",
        model_classes=("Dinov2ForImageClassification",),
        model_types=("dinov2",),
        blocks="dinov2.encoder.layer",
        register_tokens="num_register_tokens",
        checkpoints=(),
    )

    @property
    def native_image_size(self) -> tuple[int, int] | None:
        return None  # DINOv2 always interpolates its position embeddings; it takes no flag

    def readout_is_token_mean(self, score: str) -> bool:
        return False  # its head also reads the mean of per-token layernormed patches

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        normalized = self.backbone.layernorm(tokens)
        patch_mean = normalized[:, self.num_prefix_tokens :].mean(dim=1)
        pooled = self.pooled_tokens(tokens, score)
        return self.model.classifier(torch.cat([pooled, patch_mean], dim=-1)).float()


@register
class ViTMSNClassifierAdapter(ViTClassifierAdapter):
    """`ViTMSNForImageClassification`: ViT's layout and head, `classifier(layernorm(tokens)[:, 0])`."""

    spec = replace(
        ViTClassifierAdapter.spec,
        name="vit_msn",
        display_name="ViT-MSN",
        model_classes=("ViTMSNForImageClassification",),
        model_types=("vit_msn",),
        checkpoints=(),
    )
