"""LeGrad explainability maps for Hugging Face vision transformers.

    >>> from transformers_legrad import LeGradExplainer
    >>> out = LeGradExplainer(model, processor).explain(images=image, text=["a cat", "a dog"])
    >>> out.heatmaps  # [batch, prompts, height, width] in [0, 1]

Importing the package registers the `legrad-explanation` pipeline task with transformers.
"""

from .adapters import SUPPORTED_MODEL_CLASSES
from .explainer import LeGradExplainer, LeGradOutput
from .pipeline import LeGradExplanationPipeline, register_pipeline

__version__ = "0.1.0"

register_pipeline()

__all__ = ["SUPPORTED_MODEL_CLASSES", "LeGradExplainer", "LeGradExplanationPipeline", "LeGradOutput", "__version__"]
