"""Tiny random backbones (no text tower, no classifier), round-tripped with their image processors.

Like `tiny_models`: each factory seeds torch, builds the model from a small config (hidden 32, 4 blocks, 4 heads,
patch 8, 48 px), perturbs LayerNorm affines and zero biases, saves model and image processor, and loads both back
with `AutoModel` / `AutoImageProcessor` as a user would.
"""

from __future__ import annotations

from transformers import (
    AutoImageProcessor,
    AutoModel,
    BitImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
)

from tiny_models import IMAGE_SIZE, VISION, Tiny, _build, _round_trip, _square

__all__ = ["BACKBONES", "make_backbone"]

NUM_REGISTERS = 2


def _clip_processor():
    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=_square())


def _bit_processor():
    return BitImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=_square())


#: name -> (model class, config, image processor factory)
BACKBONES = {
    "clip_vision": (CLIPVisionModel, lambda: CLIPVisionConfig(**VISION), _clip_processor),
    "siglip_vision": (
        SiglipVisionModel,
        lambda: SiglipVisionConfig(**VISION),
        lambda: SiglipImageProcessorPil(size=_square()),
    ),
    "siglip_vision_no_head": (
        SiglipVisionModel,
        lambda: SiglipVisionConfig(**VISION, vision_use_head=False),
        lambda: SiglipImageProcessorPil(size=_square()),
    ),
    "vit": (ViTModel, lambda: ViTConfig(**VISION), lambda: ViTImageProcessorPil(size=_square())),
    "dinov2": (Dinov2Model, lambda: Dinov2Config(**VISION), _bit_processor),
    "dinov2_registers": (
        Dinov2WithRegistersModel,
        lambda: Dinov2WithRegistersConfig(**VISION, num_register_tokens=NUM_REGISTERS),
        _bit_processor,
    ),
    "dinov3": (
        DINOv3ViTModel,
        lambda: DINOv3ViTConfig(**VISION, num_register_tokens=NUM_REGISTERS),
        lambda: ViTImageProcessorPil(size=_square()),
    ),
}


def make_backbone(name: str, seed: int = 0) -> Tiny:
    """The tiny backbone `name` (a BACKBONES key) and its image processor, loaded back from a saved folder."""
    model_cls, config, processor = BACKBONES[name]
    model = _build(model_cls, config(), seed)
    tiny = _round_trip(model, processor(), f"backbone-{name}", auto_model=AutoModel, auto_processor=AutoImageProcessor)
    if type(tiny.model) is not model_cls:
        raise RuntimeError(f"{name}: AutoModel loaded {type(tiny.model).__name__}, not {model_cls.__name__}")
    return tiny
