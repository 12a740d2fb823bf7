"""Bundled demo: three tiny models trained on synthetic scenes, example scenes, and a demo that explains them.

The package ships three small models (a few MB each, safetensors) trained from scratch by
`scripts/train_demo_models.py` on the coloured-shape scenes of `transformers_legrad.evaluation.synthetic`, so
LeGrad can be tried, and checked against known object masks, with no network and no Hub checkpoint:

- "clip": `CLIPModel` (64 x 64 images, 8 x 8 patches) matching a scene with captions such as "a red circle";
- "siglip": `SiglipModel`, the same task with the sigmoid loss;
- "vit": `ViTForImageClassification` naming the largest object of a scene ("red circle"; 35 classes, 7 colours x
  5 shapes).

Each folder loads like a Hub checkpoint:

    >>> from transformers import AutoModel, AutoProcessor
    >>> from transformers_legrad import demo
    >>> model = AutoModel.from_pretrained(demo.model_path("clip"))
    >>> processor = AutoProcessor.from_pretrained(demo.model_path("clip"))

and `run_demo(out_dir)` writes LeGrad overlays and a labelled grid for a few example scenes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..evaluation import synthetic

__all__ = ["EXAMPLE_SEED", "MODEL_NAMES", "Example", "example_scenes", "load", "model_path", "run_demo"]

MODEL_NAMES: tuple[str, ...] = ("clip", "siglip", "vit")
#: Seed of the example scenes.
EXAMPLE_SEED = 7
_MODELS_DIR = Path(__file__).resolve().parent / "models"
_REQUIRED_FILES = ("config.json", "model.safetensors")
# Example scenes are chosen to read well: 2 or 3 objects, each showing at least this many pixels (of 64 x 64).
_MIN_EXAMPLE_AREA = 90
_DEMO_TILE_SIZE = 256


def model_path(name: str) -> Path:
    """The folder of a bundled demo model, for `from_pretrained`.

    Args:
        name: "clip", "siglip" or "vit".

    Returns:
        The folder holding `config.json`, `model.safetensors` and the processor files.

    Raises:
        ValueError: `name` is not one of `MODEL_NAMES`.
        FileNotFoundError: the folder (or its weights) is not installed.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown demo model {name!r}; the bundled demo models are: {', '.join(MODEL_NAMES)}.")
    folder = _MODELS_DIR / name
    missing = [file for file in _REQUIRED_FILES if not (folder / file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the bundled demo model {name!r} is not installed: {folder} lacks {', '.join(missing)}. Reinstall "
            "transformers-legrad (the model folders are package data), or recreate them with "
            f"`python scripts/train_demo_models.py --model {name}` from a source checkout."
        )
    return folder


def load(name: str):
    """A bundled demo model (eval mode) and its processor, loaded from `model_path(name)` without the network.

    Returns:
        (model, processor): loaded with the Auto classes of the model's family (its adapter's spec): a
        `CLIPProcessor` / `SiglipProcessor` for the dual encoders and a ViT image processor for "vit".
    """
    import transformers

    from ..adapters import registry

    path = model_path(name)
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    names = [*(config.architectures or ()), registry.default_class(config.model_type)]
    spec = next((registry.served_classes()[name] for name in names if name in registry.served_classes()), None)
    if spec is None:
        raise FileNotFoundError(f"{path} holds a {config.model_type!r} model that no registered adapter serves.")
    model = getattr(transformers, spec.auto_class).from_pretrained(path, local_files_only=True)
    processor = getattr(transformers, spec.processor_class).from_pretrained(path, local_files_only=True)
    return model.eval(), processor


@dataclass
class Example:
    """An example scene and what to ask about it.

    Attributes:
        scene: the generated scene, with its objects' masks.
        prompts: one caption per object of the scene ("a red circle"), in drawing order.
        absent_prompt: a caption of an object that is not in the scene, to compare scores with.
    """

    scene: synthetic.Scene
    prompts: list[str]
    absent_prompt: str

    @property
    def image(self) -> Image.Image:
        return self.scene.image


def example_scenes(n: int = 4, seed: int = EXAMPLE_SEED) -> list[Example]:
    """`n` example scenes (64 x 64) with 2 or 3 clearly visible objects, the same for the same seed.

    Args:
        n: number of examples.
        seed: seed of `synthetic.generate`; the default gives the bundled demo's scenes.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}.")
    chosen = [
        scene
        for scene in synthetic.generate(32 * n + 32, seed=seed)
        if 2 <= len(scene.objects) <= 3 and min(obj.area for obj in scene.objects) >= _MIN_EXAMPLE_AREA
    ][:n]
    if len(chosen) < n:  # pragma: no cover - about half of all scenes qualify
        raise RuntimeError(f"seed {seed} gave only {len(chosen)} example scenes out of {n}; try another seed.")
    return [Example(scene=scene, prompts=scene.captions, absent_prompt=_absent_caption(scene)) for scene in chosen]


def run_demo(out_dir: str | os.PathLike, model: str = "clip", n: int = 4, seed: int = EXAMPLE_SEED) -> list[Path]:
    """Explain the example scenes with a bundled model and write the pictures.

    For each scene i, in `out_dir`: `scene{i}.png` (the scene, enlarged 4x), one overlay per prompt
    `scene{i}_{prompt}.png`, and `scene{i}_grid.png`, the labelled grid of all prompts (`visualize.save_grid`) with
    the model's probabilities. The prompts are the captions of the scene's objects plus one absent object
    ("clip", "siglip"), or those objects' class names ("vit").

    Args:
        out_dir: output folder, created if needed.
        model: which bundled model explains: "clip" (default), "siglip" or "vit".
        n, seed: which example scenes (see `example_scenes`).

    Returns:
        The written files, in order.
    """
    from .. import visualize
    from ..explainer import LeGradExplainer

    network, processor = load(model)
    explainer = LeGradExplainer(network, processor)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for index, example in enumerate(example_scenes(n, seed)):
        if explainer.adapter.is_dual_encoder:
            labels = [*example.prompts, example.absent_prompt]
            output = explainer.explain(images=example.image, text=labels)
        else:
            labels = example.scene.labels
            output = explainer.explain(images=example.image, targets=labels)
        # Nearest-neighbour enlargement keeps the 64-pixel scene crisp; the maps are resized smoothly onto it.
        picture = example.image.resize((_DEMO_TILE_SIZE, _DEMO_TILE_SIZE), Image.Resampling.NEAREST)
        stem = f"scene{index}"
        picture.save(out_dir / f"{stem}.png")
        written.append(out_dir / f"{stem}.png")
        for k, label in enumerate(labels):
            path = out_dir / f"{stem}_{visualize.slug(label)}.png"
            visualize.overlay(picture, output.heatmaps[0, k]).save(path)
            written.append(path)
        written.append(
            visualize.save_grid(
                out_dir / f"{stem}_grid.png",
                picture,
                output.heatmaps[0],
                labels,
                scores=output.probabilities[0],
                tile_size=_DEMO_TILE_SIZE,
            )
        )
    return written


def _absent_caption(scene: synthetic.Scene) -> str:
    """A caption of an object not in the scene: the first object's shape in the next colour not present with it."""
    first = scene.objects[0]
    colours = list(synthetic.COLOURS)
    start = colours.index(first.colour)
    for step in range(1, len(colours)):
        label = f"{colours[(start + step) % len(colours)]} {first.shape}"
        if label not in scene.labels:
            return synthetic.caption(label)
    raise AssertionError("unreachable: a scene holds at most 4 objects")  # pragma: no cover
