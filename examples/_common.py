"""What the example scripts share: the command-line arguments, the input images and file names.

Every example takes `--model` (a Hub id or a local folder), `--images` (files or folders; by default the bundled
example scenes of `transformers_legrad.demo`, so it runs offline) and `--out` (the folder it writes to).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from transformers_legrad import demo, visualize
from transformers_legrad.images import open_image
from transformers_legrad.visualize import slug  # file-name-safe labels; the examples import it from here

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# The bundled scenes are 64 x 64; they are enlarged (nearest neighbour, so they stay crisp) for a real checkpoint's
# 224-pixel input and for pictures that can be seen.
SCENE_DISPLAY_SIZE = 256


@dataclass
class Inputs:
    """Named images and the prompts to explain them with (empty for classifiers)."""

    images: list[tuple[str, Image.Image]]
    prompts: list[str] = field(default_factory=list)


def parser(description: str, default_model: str, prompts: bool = True) -> argparse.ArgumentParser:
    """The arguments every example takes; `prompts` adds a repeatable `--prompt` (CLIP, SigLIP)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=default_model, help=f"Hub id or local folder (default {default_model})")
    parser.add_argument(
        "--images", nargs="*", default=[], help="image files or folders (default: the bundled example scenes)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder, created if needed")
    if prompts:
        parser.add_argument(
            "--prompt",
            action="append",
            default=[],
            help="a text prompt, repeatable (default with the example scenes: their objects and one absent one)",
        )
    return parser


def inputs(args: argparse.Namespace, num_scenes: int = 1) -> Inputs:
    """The images of `--images`, or `num_scenes` bundled example scenes; with the prompts of `--prompt`."""
    prompts = list(getattr(args, "prompt", []))
    if args.images:
        images = [(path.stem, open_image(path)) for path in image_paths(args.images)]
        if hasattr(args, "prompt") and not prompts:
            raise SystemExit("error: give at least one --prompt to explain your own images")
        return Inputs(images, prompts)
    examples = demo.example_scenes(num_scenes)
    images = [(f"scene{index}", enlarge(example.image)) for index, example in enumerate(examples)]
    if hasattr(args, "prompt") and not prompts:
        prompts = [*examples[0].prompts, examples[0].absent_prompt]
    return Inputs(images, prompts)


def image_paths(items: list[str]) -> list[Path]:
    """Image files among `items`, folders searched recursively, in sorted order."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            paths.append(item)
        else:
            raise SystemExit(f"error: {item} is neither an image file nor a folder")
    if not paths:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(items)}")
    return paths


def enlarge(image: Image.Image, size: int = SCENE_DISPLAY_SIZE) -> Image.Image:
    return image.resize((size, size), Image.Resampling.NEAREST)


def output_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_overlays(out: Path, name: str, results: list[dict]) -> None:
    """Write each result's overlay as `{name}_{label}.png` and print its score."""
    for result in results:
        result["overlay"].save(out / f"{name}_{slug(result['label'])}.png")
        print(f"{name}: {result['label']!r} {result['score']:.3f}")


def save_grid(path: Path, image: Image.Image, results: list[dict]) -> Path:
    """The pipeline's results for one image (asked with `return_tensors=True`) as a labelled grid PNG."""
    return visualize.save_grid(
        path,
        image,
        [result["map"] for result in results],
        [result["label"] for result in results],
        scores=[result["score"] for result in results],
    )
