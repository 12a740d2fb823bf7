"""Tiny random classifiers with ViT's layout but their own twists: DINOv2 with registers, BEiT, Data2VecVision.

Built like `tiny_models` (hidden 32, 4 layers, 4 heads, patch 8, 48 px, 5 labels, perturbed LayerNorm affines and
biases, round-tripped with their image processor). On top, what HF initializes to constants gets random values,
so a readout that forgot it would not match the reference: the relative position bias tables (zero), the layer
scales (all equal), the register, CLS and position embeddings (zero).
"""

from __future__ import annotations

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    BeitConfig,
    BeitForImageClassification,
    BeitImageProcessorPil,
    BitImageProcessorPil,
    Data2VecVisionConfig,
    Data2VecVisionForImageClassification,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
)

from tiny_models import CLASSIFIER, IMAGE_SIZE, Tiny, _build, _round_trip, _square

__all__ = [
    "NUM_REGISTERS",
    "imagenet_like_labels",
    "make_beit",
    "make_beit_cls",
    "make_data2vec_vision",
    "make_dinov2_registers",
]

NUM_REGISTERS = 4
#: BEiT as published: relative position bias in every block, layer scale, mean-pooling head.
BEIT_MEAN_POOLING = dict(use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1)
#: The other BEiT options: absolute position embeddings, one shared relative bias, no layer scale, CLS head.
BEIT_CLS_POOLING = dict(
    use_absolute_position_embeddings=True,
    use_shared_relative_position_bias=True,
    use_mean_pooling=False,
    layer_scale_init_value=0.0,
)


@torch.no_grad()
def _randomize_constants(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 2)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "relative_position_bias_table":
            param.copy_(0.5 * torch.randn(param.shape, generator=gen))
        elif leaf in ("lambda_1", "lambda_2", "lambda1"):
            param.copy_(0.1 + 0.5 * torch.rand(param.shape, generator=gen))
        elif leaf in ("cls_token", "register_tokens", "position_embeddings", "mask_token"):
            param.copy_(0.5 * torch.randn(param.shape, generator=gen))


def imagenet_like_labels() -> dict:
    """`num_labels`, `id2label`, `label2id` of 1000 classes, 281 and 285 named as in the ImageNet-1k checkpoints
    (for the model cards' usage code, which names them)."""
    id2label = {i: f"class {i}" for i in range(1000)}
    id2label[281], id2label[285] = "tabby, tabby cat", "Egyptian cat"
    return {"num_labels": 1000, "id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}


def _tiny(model_cls, config_cls, image_processor, name: str, seed: int, **config) -> Tiny:
    model = _build(model_cls, config_cls(**{**CLASSIFIER, **config}), seed)
    _randomize_constants(model, seed)
    return _round_trip(
        model, image_processor, name, auto_model=AutoModelForImageClassification, auto_processor=AutoImageProcessor
    )


def make_dinov2_registers(seed: int = 0) -> Tiny:
    """Dinov2WithRegistersForImageClassification (CLS + 4 registers, 5 labels) + BitImageProcessorPil 48x48."""
    ip = BitImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=_square())
    return _tiny(
        Dinov2WithRegistersForImageClassification,
        Dinov2WithRegistersConfig,
        ip,
        "dinov2-registers",
        seed,
        num_register_tokens=NUM_REGISTERS,
    )


def make_beit(seed: int = 0, **config) -> Tiny:
    """BeitForImageClassification as published (relative bias, layer scale, mean pooling) + BeitImageProcessorPil;
    `config` overrides (e.g. `imagenet_like_labels()`)."""
    ip = BeitImageProcessorPil(size=_square(), crop_size=_square(), do_center_crop=False)
    return _tiny(BeitForImageClassification, BeitConfig, ip, "beit", seed, **{**BEIT_MEAN_POOLING, **config})


def make_beit_cls(seed: int = 0) -> Tiny:
    """BeitForImageClassification with absolute positions, a shared relative bias, no layer scale and a CLS head."""
    ip = BeitImageProcessorPil(size=_square(), crop_size=_square(), do_center_crop=False)
    return _tiny(BeitForImageClassification, BeitConfig, ip, "beit-cls", seed, **BEIT_CLS_POOLING)


def make_data2vec_vision(seed: int = 1, **config) -> Tiny:
    """Data2VecVisionForImageClassification (relative bias, layer scale, mean pooling) + BeitImageProcessorPil;
    `config` overrides (e.g. `imagenet_like_labels()`)."""
    ip = BeitImageProcessorPil(size=_square(), crop_size=_square(), do_center_crop=False)
    config = {**BEIT_MEAN_POOLING, **config}
    return _tiny(Data2VecVisionForImageClassification, Data2VecVisionConfig, ip, "data2vec-vision", seed, **config)
