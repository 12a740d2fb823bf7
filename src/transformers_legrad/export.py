"""Hub-ready folders: a model, its processor, the `legrad-explanation` pipeline and a model card.

The folder loads with `pipeline(model=FOLDER, trust_remote_code=True)` in a process that never imported this
package: its config lists one custom pipeline, and the pipeline module written next to the weights is a one-line
import of the installed `transformers-legrad` (so the Hub runs this package's released code, not a copy).

With the package imported, `pipeline("legrad-explanation", model=FOLDER)` needs no remote code at all. That is why
the custom entry has a name of its own (`legrad-explanation-hub`): transformers demands `trust_remote_code` for any
task named in a folder's `custom_pipelines`, even a registered one.
"""

from __future__ import annotations

import json
from pathlib import Path

from .pipeline import TASK

PIPELINE_MODULE = "legrad_pipeline"
CUSTOM_TASK = f"{TASK}-hub"
PIPELINE_MODULE_SOURCE = '''"""legrad-explanation, from the installed package (pip install transformers-legrad)."""

from transformers_legrad.pipeline import LeGradExplanationPipeline

__all__ = ["LeGradExplanationPipeline"]
'''


def export_pipeline(pipe, out: str | Path, model_id: str) -> Path:
    """Write `pipe`'s model (safetensors), processor parts (image processor, tokenizer, or an audio model's feature
    extractor), pipeline module, config and card to `out`.

    Args:
        pipe: a `legrad-explanation` pipeline.
        out: the folder to write (created if needed).
        model_id: the base checkpoint's Hub id, for the card's `base_model` and links.

    Returns:
        The folder.
    """
    from .cards import render_card

    card = render_card(model_id, config=pipe.model.config)  # first: a bad id fails before anything is written
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.model.save_pretrained(folder, safe_serialization=True)
    for part in (pipe.image_processor, pipe.tokenizer, pipe.feature_extractor):
        if part is not None:
            part.save_pretrained(folder)
    (folder / f"{PIPELINE_MODULE}.py").write_text(PIPELINE_MODULE_SOURCE)

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["custom_pipelines"] = {
        CUSTOM_TASK: {
            "impl": f"{PIPELINE_MODULE}.LeGradExplanationPipeline",
            # The model's own class (or, for a class transformers does not know, its family's Auto class): a
            # backbone folder (`Dinov2Model`) must not load through `AutoModelForImageClassification`, which would
            # add an untrained head, nor a `BlipForImageTextRetrieval` folder through an Auto class (`BlipModel`).
            "pt": [_loading_class(pipe)],
            "type": pipe.explainer.adapter.spec.modality,
        }
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(card)
    return folder


def _loading_class(pipe) -> str:
    """The transformers class that loads the exported folder: the model's own, else its family's Auto class."""
    import transformers

    name = type(pipe.model).__name__
    return name if getattr(transformers, name, None) is type(pipe.model) else pipe.explainer.adapter.spec.auto_class
