"""CLIP: `CLIPModel` and `CLIPVisionModelWithProjection`.

LeGrad's per-layer readout for CLIP follows the authors' code: the mean over ALL tokens of a block's output (CLS
included), then `post_layernorm`, `visual_projection` and L2 normalization. `score="model"` uses the CLS token,
as CLIP itself pools.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DualEncoderAdapter, PixelInputs


class CLIPAdapter(DualEncoderAdapter):
    model_classes = ("CLIPModel", "CLIPVisionModelWithProjection")

    def attention_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module, int]:
        attention = block.self_attn
        return attention.v_proj, attention.out_proj, attention.num_heads

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad"

    @property
    def embedding_dim(self) -> int:
        return int(self.model.visual_projection.out_features)

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        vision = self.model.vision_model(**pixels.model_kwargs)
        return F.normalize(self.model.visual_projection(vision.pooler_output).float(), dim=-1)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        pooled = tokens[:, 0] if score == "model" else tokens.mean(dim=1)
        pooled = self.model.vision_model.post_layernorm(pooled)
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)
