"""The registry of model families: which adapter explains which class, and what every layer reads from the specs.

The package's own adapters are registered when `transformers_legrad.adapters` is imported; users add theirs with
`transformers_legrad.register_adapter`. Cards, export, the pipeline, the demo, the baselines and the CLI ask this
module (never a list of their own) which classes are supported, which family a config belongs to, and which
Auto classes load them.
"""

from __future__ import annotations

import inspect

from torch import nn

from .base import FEATURE_EXTRACTION, ZERO_SHOT, FamilyAdapter, FamilySpec

_ADAPTERS: list[type[FamilyAdapter]] = []


def register(adapter: type[FamilyAdapter], *, replace: bool = False) -> type[FamilyAdapter]:
    """Add `adapter` to the registry; each class belongs to one adapter.

    Args:
        adapter: a `FamilyAdapter` subclass with a `FamilySpec` in `spec` and its readout written.
        replace: let `adapter` take over classes another adapter explains (theirs are dropped from it).

    Raises:
        TypeError: `adapter` is not such a class.
        ValueError: one of its classes is already explained by another adapter and `replace` is False.
    """
    _check_adapter(adapter)
    names = set(adapter.spec.class_names)
    owners = {other: names & set(other.spec.class_names) for other in _ADAPTERS if other is not adapter}
    taken = {other: shared for other, shared in owners.items() if shared}
    if taken and not replace:
        other, shared = next(iter(taken.items()))
        raise ValueError(
            f"{', '.join(sorted(shared))} is already explained by {other.__name__} (family {other.spec.name!r}); "
            "pass `replace=True` to explain it with your adapter instead."
        )
    for other in taken:
        _ADAPTERS.remove(other)
    if adapter not in _ADAPTERS:
        _ADAPTERS.append(adapter)
    return adapter


def unregister(adapter: type[FamilyAdapter]) -> None:
    """Remove `adapter` (a no-op when it is not registered)."""
    if adapter in _ADAPTERS:
        _ADAPTERS.remove(adapter)


def registered_adapters() -> tuple[type[FamilyAdapter], ...]:
    """Every registered adapter class, in registration order (the package's own first)."""
    return tuple(_ADAPTERS)


def supported_model_classes() -> tuple[str, ...]:
    """The names of every class an adapter explains."""
    return tuple(name for adapter in _ADAPTERS for name in adapter.spec.class_names)


def adapter_class_for(model_class: type) -> type[FamilyAdapter] | None:
    """The adapter of `model_class`, or of the nearest supported base class in its MRO; None when unsupported.

    A spec's class given by name matches classes defined in `transformers` only (a class of yours that happens to
    be called `CLIPModel` is not CLIP); a class given as a class matches it and its subclasses.
    """
    for cls in model_class.__mro__:
        for adapter in _ADAPTERS:
            for entry in adapter.spec.model_classes:
                if entry is cls or (
                    isinstance(entry, str) and entry == cls.__name__ and cls.__module__.startswith("transformers.")
                ):
                    return adapter
    return None


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter for `model`'s class (or the nearest supported base class in its MRO).

    Raises:
        TypeError: the model's class is not supported (the message lists the supported classes), or the adapter's
            spec does not match the model's modules.
    """
    adapter = adapter_class_for(type(model))
    if adapter is None:
        raise TypeError(
            f"LeGradExplainer does not support {type(model).__name__}. Supported model classes: "
            f"{', '.join(supported_model_classes())}. Load the checkpoint with one of them (e.g. "
            "`CLIPModel.from_pretrained(...)` rather than a vision-only or text-only class), or describe its "
            "family with `transformers_legrad.register_adapter` (README: 'Adding a model family')."
        )
    return adapter(model)


def families() -> dict[str, FamilySpec]:
    """Each family's spec by family name: the first registered adapter of a name speaks for it."""
    found: dict[str, FamilySpec] = {}
    for adapter in _ADAPTERS:
        found.setdefault(adapter.spec.name, adapter.spec)
    return found


def served_classes() -> dict[str, FamilySpec]:
    """The classes the pipeline, cards and export serve (`FamilySpec.served_classes`), with their spec."""
    return {name: adapter.spec for adapter in _ADAPTERS for name in adapter.spec.served_classes}


def family_of_model_type(model_type: str | None) -> FamilySpec | None:
    """The family whose checkpoints have this `config.model_type`, or None."""
    for adapter in _ADAPTERS:
        if model_type in adapter.spec.model_types:
            return families()[adapter.spec.name]
    return None


def default_class(model_type: str | None) -> str | None:
    """The class a config of `model_type` that names no architecture loads as (dual encoders), or None."""
    for adapter in _ADAPTERS:
        if model_type in adapter.spec.model_types and adapter.spec.default_class is not None:
            return adapter.spec.default_class
    return None


def auto_classes() -> tuple[str, ...]:
    """The transformers Auto classes that load the served classes, zero-shot (dual encoders) first: a CLIP
    checkpoint then loads as a dual encoder rather than through another head; backbones' `AutoModel` last, as it
    loads nearly any checkpoint."""
    order = {ZERO_SHOT: 0, FEATURE_EXTRACTION: 2}
    tasks = sorted({adapter.spec.base_task for adapter in _ADAPTERS}, key=lambda task: (order.get(task, 1), task))
    ordered: list[str] = []
    for task in tasks:
        for adapter in _ADAPTERS:
            if adapter.spec.base_task == task and adapter.spec.auto_class not in ordered:
                ordered.append(adapter.spec.auto_class)
    return tuple(ordered)


def _check_adapter(adapter) -> None:
    if not (inspect.isclass(adapter) and issubclass(adapter, FamilyAdapter)):
        raise TypeError(f"an adapter must be a FamilyAdapter subclass, got {adapter!r}.")
    spec = getattr(adapter, "spec", None)
    if not isinstance(spec, FamilySpec):
        raise TypeError(f"{adapter.__name__} has no `spec`: declare its family as `spec = FamilySpec(...)`.")
    missing = []
    if adapter.image_features is FamilyAdapter.image_features:
        missing.append("image_features")
    readout = "pooling_head_attention" if adapter.explains_pooling_head else "layer_features"
    if getattr(adapter, readout) is getattr(FamilyAdapter, readout):
        missing.append(readout)
    if (adapter.is_dual_encoder or adapter.is_backbone) and adapter.embedding_dim is FamilyAdapter.embedding_dim:
        missing.append("embedding_dim")
    if adapter.is_dual_encoder != spec.is_dual_encoder:
        raise TypeError(
            f"{adapter.__name__}: its spec's base task {spec.base_task!r} says "
            f"{'prompts' if spec.is_dual_encoder else 'classes'}, but the adapter "
            f"{'is' if adapter.is_dual_encoder else 'is not'} a dual encoder; derive it from DualEncoderAdapter "
            "for prompts, FamilyAdapter for classes."
        )
    if adapter.is_backbone != spec.is_backbone:
        raise TypeError(
            f"{adapter.__name__}: its spec's base task {spec.base_task!r} and its `is_backbone` "
            f"({adapter.is_backbone}) disagree; derive backbones from backbones.BackboneAdapter with base task "
            f"{FEATURE_EXTRACTION!r}."
        )
    if missing:
        raise TypeError(
            f"{adapter.__name__} does not write its readout: {', '.join(missing)} must be defined (see "
            "FamilyAdapter's docstring)."
        )
