"""The registry of model families: which adapter explains which class, and what every layer reads from the specs.

The package's own adapters are registered when `transformers_legrad.adapters` is imported; users add theirs with
`transformers_legrad.register_adapter`. Cards, export, the pipeline, the demo, the baselines and the CLI ask this
module (never a list of their own) which classes are supported, which family a config belongs to, and which
Auto classes load them.
"""

from __future__ import annotations

import inspect
import threading

from torch import nn

from .base import FEATURE_EXTRACTION, TASK_LOADERS, FamilyAdapter, FamilySpec

# Registered adapters, oldest first. Writers replace the tuple under the lock; readers take the current tuple once,
# so a registration in another thread never changes a list under a reader's loop.
_ADAPTERS: tuple[type[FamilyAdapter], ...] = ()
_LOCK = threading.Lock()
_REVISION = 0


def register(adapter: type[FamilyAdapter], *, replace: bool = False) -> type[FamilyAdapter]:
    """Add `adapter` to the registry (usable as a class decorator).

    Args:
        adapter: a `FamilyAdapter` subclass with a `FamilySpec` in `spec` and its readout written.
        replace: let `adapter` explain classes another adapter explains too: for those classes the newest
            registration wins, and unregistering it gives them back to the other adapter, which stays registered.

    Raises:
        TypeError: `adapter` is not such a class.
        ValueError: one of its classes is already explained by another adapter and `replace` is False.
    """
    global _ADAPTERS, _REVISION
    _check_adapter(adapter)
    with _LOCK:
        names = set(adapter.spec.class_names)
        for other in _ADAPTERS:
            shared = names & set(other.spec.class_names)
            if other is not adapter and shared and not replace:
                raise ValueError(
                    f"{', '.join(sorted(shared))} is already explained by {other.__name__} (family "
                    f"{other.spec.name!r}); pass `replace=True` to explain it with your adapter instead."
                )
        _ADAPTERS = (*(registered for registered in _ADAPTERS if registered is not adapter), adapter)
        _REVISION += 1
    return adapter


def unregister(adapter: type[FamilyAdapter]) -> None:
    """Remove `adapter` (a no-op when it is not registered)."""
    global _ADAPTERS, _REVISION
    with _LOCK:
        _ADAPTERS = tuple(registered for registered in _ADAPTERS if registered is not adapter)
        _REVISION += 1


def revision() -> int:
    """A number that changes with every registration: callers cache what they derive from the registry by it."""
    return _REVISION


def registered_adapters() -> tuple[type[FamilyAdapter], ...]:
    """Every registered adapter: dual encoders first, then the others, each kind in registration order."""
    adapters = _ADAPTERS
    return tuple(sorted(adapters, key=lambda adapter: not adapter.is_dual_encoder))


def supported_model_classes() -> tuple[str, ...]:
    """The names of every class an adapter explains, once each."""
    names = (name for adapter in registered_adapters() for name in adapter.spec.class_names)
    return tuple(dict.fromkeys(names))


def adapter_class_for(model_class: type) -> type[FamilyAdapter] | None:
    """The adapter of `model_class`, or of the nearest supported base class in its MRO; None when unsupported.

    A spec's class given by name matches classes defined in `transformers` only (a class of yours that happens to
    be called `CLIPModel` is not CLIP); a class given as a class matches it and its subclasses. Where two adapters
    explain a class (`replace=True`), the newest registration wins.
    """
    newest_first = _ADAPTERS[::-1]
    for cls in model_class.__mro__:
        for adapter in newest_first:
            for entry in adapter.spec.model_classes:
                if entry is cls or (
                    isinstance(entry, str) and entry == cls.__name__ and cls.__module__.startswith("transformers.")
                ):
                    return adapter
    return None


def adapter_for(model: nn.Module, **options: object) -> FamilyAdapter:
    """The adapter for `model`'s class (or the nearest supported base class in its MRO), built with the family's
    `options` (BLIP: `use_itm_head`).

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
    return adapter(model, **options)


def families() -> dict[str, FamilySpec]:
    """Each family's spec by family name: the first registered adapter of a name speaks for it."""
    found: dict[str, FamilySpec] = {}
    for adapter in registered_adapters():
        found.setdefault(adapter.spec.name, adapter.spec)
    return found


def served_classes() -> dict[str, FamilySpec]:
    """The classes the pipeline, cards and export serve (`FamilySpec.served_classes`), with the spec of the adapter
    that explains them (the newest one, where `replace=True` gave a class to two)."""
    served: dict[str, FamilySpec] = {}
    for adapter in _ADAPTERS:  # oldest first: a newer registration overwrites
        for name in adapter.spec.served_classes:
            served[name] = adapter.spec
    return {name: served[name] for name in sorted(served, key=list(supported_model_classes()).index)}


def family_of_model_type(model_type: str | None) -> FamilySpec | None:
    """The family whose checkpoints have this `config.model_type`, or None."""
    for adapter in registered_adapters():
        if model_type in adapter.spec.model_types:
            return families()[adapter.spec.name]
    return None


def default_class(model_type: str | None) -> str | None:
    """The class a config of `model_type` that names no architecture loads as (dual encoders), or None."""
    for adapter in registered_adapters():
        if model_type in adapter.spec.model_types and adapter.spec.default_class is not None:
            return adapter.spec.default_class
    return None


def auto_classes() -> tuple[str, ...]:
    """The transformers Auto classes that load the registered families, in `TASK_LOADERS` order: zero-shot first (a
    CLIP checkpoint then loads as a dual encoder rather than through another head), backbones' `AutoModel` last, as
    it loads nearly any checkpoint."""
    tasks = {adapter.spec.base_task for adapter in _ADAPTERS}
    loaders = [auto_class for task, (auto_class, _) in TASK_LOADERS.items() if task in tasks]
    loaders += sorted({adapter.spec.auto_class for adapter in _ADAPTERS} - set(loaders))  # specs' own `auto_model`
    return tuple(sorted(dict.fromkeys(loaders), key=lambda name: name == "AutoModel"))  # AutoModel last


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
    if adapter.is_detector != spec.is_detector:
        raise TypeError(
            f"{adapter.__name__}: its spec's base task {spec.base_task!r} and its `is_detector` "
            f"({adapter.is_detector}) disagree; a detector's adapter sets `is_detector = True` (see adapters/owl.py)."
        )
    if spec.modality == "audio" and adapter.prepare_audio is FamilyAdapter.prepare_audio:
        raise TypeError(
            f"{adapter.__name__}: an audio family's adapter reads waveforms and spectrograms; derive it from "
            "adapters.audio.AudioClassifierAdapter (its `prepare_audio` and `prepare_input_values`)."
        )
    if missing:
        raise TypeError(
            f"{adapter.__name__} does not write its readout: {', '.join(missing)} must be defined (see "
            "FamilyAdapter's docstring)."
        )
