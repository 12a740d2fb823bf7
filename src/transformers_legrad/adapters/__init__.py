"""One adapter per model family; `adapter_for(model)` picks the one that explains `model` (see `registry`).

Every module of this package but `base` and `registry` is a family's adapter file, imported here so that its
`@register`ed adapters are known: adding a family is adding its file (and its tests), nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from . import registry
from .base import (
    AUDIO_CLASSIFICATION,
    FEATURE_EXTRACTION,
    IMAGE_CLASSIFICATION,
    VIDEO_CLASSIFICATION,
    ZERO_SHOT,
    ZERO_SHOT_DETECTION,
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

#: The adapters this package ships (a snapshot at import: `registry.registered_adapters()` includes yours).
ADAPTERS: tuple[type[FamilyAdapter], ...] = registry.registered_adapters()
#: The classes the package's own adapters explain (`registry.supported_model_classes()` includes yours).
SUPPORTED_MODEL_CLASSES: tuple[str, ...] = registry.supported_model_classes()

# Each of the package's adapters is importable from here by its class name (`adapters.CLIPAdapter`).
globals().update({adapter.__name__: adapter for adapter in ADAPTERS})

__all__ = [
    "ADAPTERS",
    "AUDIO_CLASSIFICATION",
    "FEATURE_EXTRACTION",
    "IMAGE_CLASSIFICATION",
    "SUPPORTED_MODEL_CLASSES",
    "VIDEO_CLASSIFICATION",
    "ZERO_SHOT",
    "ZERO_SHOT_DETECTION",
    "AttentionHandle",
    "DualEncoderAdapter",
    "FamilyAdapter",
    "FamilySpec",
    "HubCheckpoint",
    "PixelInputs",
    "TextInputs",
    "adapter_for",
    "registry",
    *sorted(adapter.__name__ for adapter in ADAPTERS),
]
