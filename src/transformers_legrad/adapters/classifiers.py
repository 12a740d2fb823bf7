"""ViT-family image classifiers: ViT, DeiT (with or without teacher head) and DINOv2.

LeGrad's recipe transposed to a classification head: each explained block's output tokens go through the model's
final layernorm and head with the CLS feature replaced by the mean over ALL tokens (as CLIP's readout uses the
token mean), and the score of class c is its logit. Where a head reads more than the CLS token, the other inputs
are kept as the model computes them: DeiT's distillation head also reads the token mean, DINOv2's head reads
[mean-all feature, mean of normalized patch tokens]. `score="model"` uses the model's own pooling exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FamilyAdapter, PixelInputs


class ViTClassifierAdapter(FamilyAdapter):
    """`ViTForImageClassification`: `classifier(layernorm(tokens)[:, 0])`."""

    model_classes = ("ViTForImageClassification",)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def vision_config(self):
        return self.model.config

    @property
    def blocks(self) -> nn.ModuleList:
        return self.backbone.layers

    def attention_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module, int]:
        attention = block.attention
        return attention.v_proj, attention.o_proj, int(self.vision_config.num_attention_heads)

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


class DeiTWithTeacherAdapter(ViTClassifierAdapter):
    """`DeiTForImageClassificationWithTeacher`: CLS + distillation token, logits averaged over two heads."""

    model_classes = ("DeiTForImageClassificationWithTeacher",)

    @property
    def num_prefix_tokens(self) -> int:
        return 2

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        if score == "model":
            normalized = self.backbone.layernorm(tokens)
            cls_feature, distillation_feature = normalized[:, 0], normalized[:, 1]
        else:
            cls_feature = distillation_feature = self.backbone.layernorm(tokens.mean(dim=1))
        logits = self.model.cls_classifier(cls_feature) + self.model.distillation_classifier(distillation_feature)
        return (logits / 2).float()


class DeiTAdapter(ViTClassifierAdapter):
    """`DeiTForImageClassification`: like ViT, but the sequence holds CLS + distillation token."""

    model_classes = ("DeiTForImageClassification",)

    @property
    def num_prefix_tokens(self) -> int:
        return 2


class Dinov2ClassifierAdapter(ViTClassifierAdapter):
    """`Dinov2ForImageClassification`: `classifier(cat[CLS, mean of patch tokens])` after the final layernorm."""

    model_classes = ("Dinov2ForImageClassification",)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.backbone.encoder.layer

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + int(getattr(self.vision_config, "num_register_tokens", 0) or 0)

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
