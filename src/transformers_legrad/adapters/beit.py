"""BEiT-layout image classifiers: `BeitForImageClassification` and `Data2VecVisionForImageClassification`.

Both put a relative position bias on the attention logits before the softmax (the explained A is still the softmax
output, so the engine's dS/dA = dS/dO V^T holds unchanged) and scale each residual branch by a learned per-channel
layer scale (`lambda_1`, `lambda_2`). Their head is `classifier(pooled)`, pooled by `config.use_mean_pooling`:

- mean pooling (the published checkpoints): `pooler.layernorm(mean of the PATCH tokens)`, CLS left out;
- CLS pooling: `layernorm(tokens)[:, 0]`.

LeGrad's readout (`score="legrad"`) is the rule of every classifier here: the pooled feature replaced by the
model's own norm of the mean over ALL tokens, CLS included (`pooler.layernorm(mean Z)` with mean pooling,
`layernorm(mean Z)` without). `score="model"` is the model's own pooling exactly, CLS left out of the mean.

Data2VecVision keeps the pre-refactor module names (`attention.attention.value`, `attention.output.dense`,
`output.dense`) and picks its attention class when it is built.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .base import IMAGE_CLASSIFICATION, FamilySpec, HubCheckpoint, PixelInputs
from .classifiers import CLASSIFIER_NOTES, FINE_TUNED_AT_224, VIT_LAYOUT, ViTClassifierAdapter
from .registry import register

BEIT_SCORE = (
    "A class's score at block l is the classifier's logit for that class computed from that block's output "
    "tokens: `s^l = classifier(norm(mean of all tokens))[class]`, where `norm` is the layernorm the model puts on "
    "its pooled feature (the pooler's, for the mean-pooling checkpoints), and the mean takes the CLS token too "
    "(the recipe of the LeGrad paper transposed to a classification head)."
)
BEIT_NOTES = (
    *CLASSIFIER_NOTES,
    "- **Pooling.** The model's own head averages the patch tokens only; LeGrad's per-layer score averages all "
    'tokens, CLS included, as for every other classifier. `score="model"` explains the model\'s own pooling.',
)
#: A base-sized (768 wide, 12 blocks) ImageNet-1k checkpoint fine-tuned at 224 px: parameters counted from its
#: config on the meta device (the classifier is the difference between the two counts).
BASE_224 = {
    "parameters_millions": 87,
    "image_tower_parameters_millions": 86,
    "image_size": 224,
    "image_size_note": FINE_TUNED_AT_224,
}


@register
class BeitClassifierAdapter(ViTClassifierAdapter):
    """`BeitForImageClassification`: `classifier(pooler(layernorm(tokens)))`."""

    spec = FamilySpec(
        name="beit",
        display_name="BEiT",
        model_classes=("BeitForImageClassification",),
        base_task=IMAGE_CLASSIFICATION,
        model_types=("beit",),
        blocks="beit.layers",
        **VIT_LAYOUT,
        score_definition=BEIT_SCORE,
        reading_notes=BEIT_NOTES,
        checkpoints=(
            HubCheckpoint(
                model_id="microsoft/beit-base-patch16-224",
                license="apache-2.0",
                native_resolution=224,
                patch_size=16,
                **BASE_224,
            ),
        ),
    )

    @property
    def pooled_norm(self) -> nn.Module:
        """The layernorm the model puts on its pooled feature: the pooler's (mean pooling) or the final one."""
        if self.backbone.config.use_mean_pooling:
            return self.backbone.pooler.layernorm
        return self.backbone.layernorm

    def readout_is_token_mean(self, score: str) -> bool:
        # The layer scale multiplies the MLP output per channel, the same for every token, so the gradient at the
        # MLP's output projection is still one vector for all tokens. The model's own mean leaves CLS out: not a
        # mean over all tokens.
        return score == "legrad"

    def pooled_tokens(self, tokens: torch.Tensor, score: str) -> torch.Tensor:
        """The pooled feature the classifier reads [batch, hidden], from block output tokens [batch, tokens, hidden]."""
        if score == "model":
            return self.backbone.pooler(self.backbone.layernorm(tokens))
        return self.pooled_norm(tokens.mean(dim=1))

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        return self.model.classifier(self.pooled_tokens(tokens, score)).float()


@register
class Data2VecVisionClassifierAdapter(BeitClassifierAdapter):
    """`Data2VecVisionForImageClassification`: BEiT's head and readout under Data2VecVision's module names."""

    spec = replace(
        BeitClassifierAdapter.spec,
        name="data2vec-vision",
        display_name="Data2Vec-Vision",
        model_classes=("Data2VecVisionForImageClassification",),
        model_types=("data2vec-vision",),
        blocks="data2vec_vision.encoder.layer",
        attention="attention",
        value="attention.attention.value",
        output="attention.output.dense",
        mlp_output="output.dense",
        checkpoints=(
            HubCheckpoint(
                model_id="facebook/data2vec-vision-base-ft1k",
                license="apache-2.0",
                native_resolution=224,
                patch_size=16,
                **BASE_224,
            ),
        ),
    )
