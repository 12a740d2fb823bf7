"""One adapter per model family; `adapter_for(model)` picks the one that explains `model`."""

from __future__ import annotations

from torch import nn

from .base import AttentionHandle, FamilyAdapter, PixelInputs, TextInputs
from .classifiers import DeiTAdapter, DeiTWithTeacherAdapter, Dinov2ClassifierAdapter, ViTClassifierAdapter
from .clip import CLIPAdapter
from .siglip import Siglip2Adapter, SiglipAdapter

ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    CLIPAdapter,
    SiglipAdapter,
    Siglip2Adapter,
    ViTClassifierAdapter,
    DeiTAdapter,
    DeiTWithTeacherAdapter,
    Dinov2ClassifierAdapter,
)

SUPPORTED_MODEL_CLASSES: tuple[str, ...] = tuple(name for adapter in ADAPTERS for name in adapter.model_classes)


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter for `model`'s class (or the nearest supported base class in its MRO).

    Raises:
        TypeError: the model's class is not supported; the message lists the supported classes.
    """
    by_name = {name: adapter for adapter in ADAPTERS for name in adapter.model_classes}
    for cls in type(model).__mro__:
        if cls.__name__ in by_name and cls.__module__.startswith("transformers."):
            return by_name[cls.__name__](model)
    raise TypeError(
        f"LeGradExplainer does not support {type(model).__name__}. Supported model classes: "
        f"{', '.join(SUPPORTED_MODEL_CLASSES)}. Load the checkpoint with one of them (e.g. "
        "`CLIPModel.from_pretrained(...)` rather than a vision-only or text-only class)."
    )


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_CLASSES",
    "AttentionHandle",
    "FamilyAdapter",
    "PixelInputs",
    "TextInputs",
    "adapter_for",
]
