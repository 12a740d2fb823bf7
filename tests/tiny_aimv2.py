"""Tiny random AIMv2 models (`Aimv2Model`, `Aimv2VisionModel` with or without its head), built offline.

Like `tiny_models`: each factory seeds torch, builds the model from a small config (the vision tower of
`tiny_models.VISION`: hidden 32, 4 blocks, 4 heads, patch 8, 48 px), gives every RMSNorm weight and zero bias a
random value (HF init leaves RMSNorm weights at one, so a readout that forgot a norm would still match), and
round-trips it with its processor through save_pretrained/from_pretrained. AIMv2 checkpoints ship a
`CLIPProcessor` (CLIP's image processor and BPE tokenizer); here the tokenizer is `tiny_models.make_tokenizer`'s
BPE trained offline on the test prompts (bos 0, eos = pad 1).
"""

from __future__ import annotations

import torch
from transformers import (
    Aimv2Config,
    Aimv2Model,
    Aimv2VisionConfig,
    Aimv2VisionModel,
    AutoImageProcessor,
    AutoModel,
    AutoProcessor,
    CLIPProcessor,
)

from tiny_models import (
    PROJECTION_DIM,
    VISION,
    Tiny,
    _build,
    _clip_image_processor,
    _round_trip,
    _text_config,
    make_tokenizer,
)

__all__ = ["make_aimv2", "make_aimv2_vision"]


@torch.no_grad()
def _perturb_rms_norms(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed + 2)
    for module in model.modules():
        if type(module).__name__ == "Aimv2RMSNorm":
            module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=gen))
    return model


def _config(**vision) -> Aimv2Config:
    tok = make_tokenizer()
    text = _text_config(tok)
    return Aimv2Config(text_config=text, vision_config=dict(VISION, **vision), projection_dim=PROJECTION_DIM)


def make_aimv2(seed: int = 0) -> Tiny:
    """Aimv2Model (learned 6x6 position embeddings, pooling head) + CLIPProcessor (48x48 center crop, BPE)."""
    model = _perturb_rms_norms(_build(Aimv2Model, _config(), seed), seed)
    processor = CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=make_tokenizer())
    tiny = _round_trip(model, processor, "aimv2", auto_model=AutoModel, auto_processor=AutoProcessor)
    if type(tiny.model) is not Aimv2Model:
        raise RuntimeError(f"AutoModel loaded {type(tiny.model).__name__}, not Aimv2Model")
    return tiny


def make_aimv2_vision(seed: int = 0, *, use_head: bool = True, is_native: bool = False) -> Tiny:
    """Aimv2VisionModel + CLIP's image processor (48x48 center crop).

    Args:
        use_head: with the attention-pooling head (the default) or without (`pooler_output` None).
        is_native: 2D sine-cosine position embeddings built for each input's grid (any size) instead of learned
            ones for the 6x6 grid.
    """
    config = Aimv2VisionConfig(**VISION, use_head=use_head, is_native=is_native)
    model = _perturb_rms_norms(_build(Aimv2VisionModel, config, seed), seed)
    name = f"aimv2-vision-{'head' if use_head else 'no-head'}{'-native' if is_native else ''}"
    tiny = _round_trip(model, _clip_image_processor(), name, auto_model=AutoModel, auto_processor=AutoImageProcessor)
    if type(tiny.model) is not Aimv2VisionModel:
        raise RuntimeError(f"AutoModel loaded {type(tiny.model).__name__}, not Aimv2VisionModel")
    return tiny
