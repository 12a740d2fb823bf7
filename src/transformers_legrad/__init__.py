"""LeGrad explainability maps for Hugging Face vision transformers.

    >>> from transformers_legrad import LeGradExplainer
    >>> out = LeGradExplainer(model, processor).explain(images=image, text=["a cat", "a dog"])
    >>> out.heatmaps  # [batch, prompts, height, width] in [0, 1]

Importing the package registers the `legrad-explanation` pipeline task with transformers. A model family the
package does not know is added with `register_adapter` (README: "Adding a model family").
"""

from importlib import metadata as _metadata

from .adapters import SUPPORTED_MODEL_CLASSES, DualEncoderAdapter, FamilyAdapter, FamilySpec, registry
from .explainer import LeGradExplainer, LeGradOutput
from .pipeline import LeGradExplanationPipeline, register_pipeline
from .request import ExplanationRequest

try:  # one source of truth: the version pyproject.toml gave the installed distribution
    __version__ = _metadata.version("transformers-legrad")
except _metadata.PackageNotFoundError:  # sources on the path without an install: "unknown", in PEP 440's local form
    __version__ = "0+unknown"


def register_adapter(adapter: type[FamilyAdapter], *, replace: bool = False) -> type[FamilyAdapter]:
    """Explain a model family this package does not ship: register its adapter everywhere at once.

    The explainer, the `legrad-explanation` pipeline (and the Auto class it loads the family with), model cards,
    export and the CLI all read the family from `adapter.spec`. Usable as a class decorator.

    Args:
        adapter: a `FamilyAdapter` (classes) or `DualEncoderAdapter` (prompts) subclass with `spec =
            FamilySpec(...)` and its readout (`image_features`, `layer_features`).
        replace: let it take over classes another adapter explains.

    Returns:
        `adapter`, unchanged.

    Raises:
        TypeError: `adapter` has no spec or no readout. ValueError: its classes are already explained.
    """
    registry.register(adapter, replace=replace)
    register_pipeline()
    return adapter


register_pipeline()

__all__ = [
    "SUPPORTED_MODEL_CLASSES",
    "DualEncoderAdapter",
    "ExplanationRequest",
    "FamilyAdapter",
    "FamilySpec",
    "LeGradExplainer",
    "LeGradExplanationPipeline",
    "LeGradOutput",
    "__version__",
    "register_adapter",
]
