"""LeGrad explainability maps for Hugging Face vision transformers.

    >>> from transformers_legrad import LeGradExplainer
    >>> out = LeGradExplainer(model, processor).explain(images=image, text=["a cat", "a dog"])
    >>> out.heatmaps  # [batch, prompts, height, width] in [0, 1]

Importing the package registers the `legrad-explanation` pipeline task with transformers.
"""

from importlib import metadata as _metadata

from .adapters import SUPPORTED_MODEL_CLASSES
from .explainer import LeGradExplainer, LeGradOutput
from .pipeline import LeGradExplanationPipeline, register_pipeline
from .request import ExplanationRequest

try:  # one source of truth: the version pyproject.toml gave the installed distribution
    __version__ = _metadata.version("transformers-legrad")
except _metadata.PackageNotFoundError:  # sources on the path without an install: "unknown", in PEP 440's local form
    __version__ = "0+unknown"

register_pipeline()

__all__ = [
    "SUPPORTED_MODEL_CLASSES",
    "ExplanationRequest",
    "LeGradExplainer",
    "LeGradExplanationPipeline",
    "LeGradOutput",
    "__version__",
]
