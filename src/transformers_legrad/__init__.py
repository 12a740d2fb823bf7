"""LeGrad explainability maps for Hugging Face vision transformers.

>>> from transformers_legrad import LeGradExplainer
>>> out = LeGradExplainer(model, processor).explain(images=image, text=["a cat", "a dog"])
>>> out.heatmaps  # [batch, prompts, height, width] in [0, 1]
"""

from .adapters import SUPPORTED_MODEL_CLASSES
from .explainer import LeGradExplainer, LeGradOutput

__version__ = "0.1.0"

__all__ = ["SUPPORTED_MODEL_CLASSES", "LeGradExplainer", "LeGradOutput", "__version__"]
