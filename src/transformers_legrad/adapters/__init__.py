"""One adapter per model family; `adapter_for(model)` picks the one that explains `model` (see `registry`).

Every module of this package but `base` and `registry` is a family's adapter file, imported here so that its
`@register`ed adapters are known: adding a family is adding its file (and its tests), nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from . import registry
from .base import (
    IMAGE_CLASSIFICATION,
    ZERO_SHOT,
    AttentionHandle,
    DualEncoderAdapter,
    FamilyAdapter,
    FamilySpec,
    HubCheckpoint,
    PixelInputs,
    TextInputs,
)
from .registry import adapter_for

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

from .classifiers import (  # noqa: E402  (re-exported names of the package's own adapters)
    DeiTAdapter,
    DeiTWithTeacherAdapter,
    Dinov2ClassifierAdapter,
    ViTClassifierAdapter,
)
from .clip import CLIPAdapter  # noqa: E402
from .siglip import Siglip2Adapter, SiglipAdapter  # noqa: E402

#: The adapters this package ships, in registration order (adapter files in name order).
ADAPTERS: tuple[type[FamilyAdapter], ...] = registry.registered_adapters()

#: The classes the package's own adapters explain; `registry.supported_model_classes()` adds registered ones.
SUPPORTED_MODEL_CLASSES: tuple[str, ...] = registry.supported_model_classes()

__all__ = [
    "ADAPTERS",
    "IMAGE_CLASSIFICATION",
    "SUPPORTED_MODEL_CLASSES",
    "ZERO_SHOT",
    "AttentionHandle",
    "CLIPAdapter",
    "DeiTAdapter",
    "DeiTWithTeacherAdapter",
    "Dinov2ClassifierAdapter",
    "DualEncoderAdapter",
    "FamilyAdapter",
    "FamilySpec",
    "HubCheckpoint",
    "PixelInputs",
    "Siglip2Adapter",
    "SiglipAdapter",
    "TextInputs",
    "ViTClassifierAdapter",
    "adapter_for",
    "registry",
]
