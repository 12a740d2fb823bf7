"""One adapter per model family; `adapter_for(model)` picks the one that explains `model` (see `registry`)."""

from __future__ import annotations

from . import registry
from .base import (
    IMAGE_CLASSIFICATION,
    ZERO_SHOT,
    AttentionHandle,
    DualEncoderAdapter,
    FamilyAdapter,
    FamilySpec,
    PixelInputs,
    TextInputs,
)
from .classifiers import DeiTAdapter, DeiTWithTeacherAdapter, Dinov2ClassifierAdapter, ViTClassifierAdapter
from .clip import CLIPAdapter
from .registry import adapter_for
from .siglip import Siglip2Adapter, SiglipAdapter

#: The adapters this package ships, registered at import in this order.
ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    CLIPAdapter,
    SiglipAdapter,
    Siglip2Adapter,
    ViTClassifierAdapter,
    DeiTAdapter,
    DeiTWithTeacherAdapter,
    Dinov2ClassifierAdapter,
)
for _adapter in ADAPTERS:
    registry.register(_adapter)

#: The classes the package's own adapters explain; `registry.supported_model_classes()` adds registered ones.
SUPPORTED_MODEL_CLASSES: tuple[str, ...] = registry.supported_model_classes()

__all__ = [
    "ADAPTERS",
    "IMAGE_CLASSIFICATION",
    "SUPPORTED_MODEL_CLASSES",
    "ZERO_SHOT",
    "AttentionHandle",
    "DualEncoderAdapter",
    "FamilyAdapter",
    "FamilySpec",
    "PixelInputs",
    "TextInputs",
    "adapter_for",
    "registry",
]
