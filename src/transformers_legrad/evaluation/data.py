"""Localization examples for the benchmark: an image, what to look for in it, and where it is.

Two sources give the same `Example` type:

- a JSONL manifest (`read_manifest`), one example per line:

      {"image": "images/0001.jpg", "prompt": "a red circle", "mask": "masks/0001_red_circle.png"}
      {"image": "images/0002.jpg", "label": "tabby, tabby cat", "mask": "masks/0002.png"}
      {"image": "images/0003.jpg", "label": 281, "mask": "masks/0003.png"}

  `prompt` is a text prompt for dual encoders (CLIP, SigLIP), `label` a class name or id for classifiers; `mask` a
  PNG of the image's size whose nonzero pixels are the object. Relative paths are relative to the manifest's
  folder. Images are read as stored (no EXIF rotation), so masks must align with the stored pixels.
- generated scenes of `synthetic` (`examples_from_scenes`): one example per object of each scene, with the prompt
  `synthetic.caption(label)` ("a red circle") or the label itself ("red circle").

Example:
    >>> from transformers_legrad.evaluation import data, synthetic
    >>> examples = data.examples_from_scenes(synthetic.generate(10, seed=1), query="prompt")
    >>> examples[0].prompt, examples[0].mask.shape
    ('a green ring', (64, 64))
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import synthetic

__all__ = ["Example", "ManifestError", "examples_from_scenes", "read_manifest", "write_manifest"]


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names the file and the line."""


@dataclass
class Example:
    """One localization query.

    Attributes:
        image: RGB PIL image.
        mask: bool [height, width] of the image's size, True on the object.
        prompt: the text prompt (dual encoders), or None.
        label: the class name or id (classifiers), or None.
        source: where the example comes from, e.g. "manifest.jsonl:3" or "synthetic seed=5 scene=2 object=0".
    """

    image: Image.Image = field(repr=False)
    mask: np.ndarray = field(repr=False)
    prompt: str | None = None
    label: str | int | None = None
    source: str = ""

    @property
    def query(self) -> str | int:
        """The prompt, or else the label."""
        return self.prompt if self.prompt is not None else self.label


def examples_from_scenes(
    scenes: Iterable[synthetic.Scene], query: str = "prompt", *, seed: int | None = None
) -> list[Example]:
    """One example per object of each scene.

    Args:
        scenes: scenes from `synthetic.generate`.
        query: "prompt" (dual encoders: prompt = `synthetic.caption(object.label)`) or "label" (classifiers: label =
            `object.label`, e.g. "red circle").
        seed: the seed the scenes were generated with, recorded in each example's `source`.

    Returns:
        A list of examples, scene by scene, objects in drawing order.
    """
    if query not in ("prompt", "label"):
        raise ValueError(f"`query` must be 'prompt' or 'label', got {query!r}.")
    origin = "synthetic" if seed is None else f"synthetic seed={seed}"
    examples = []
    for scene_index, scene in enumerate(scenes):
        for object_index, obj in enumerate(scene.objects):
            examples.append(
                Example(
                    image=scene.image,
                    mask=obj.mask.copy(),
                    prompt=synthetic.caption(obj.label) if query == "prompt" else None,
                    label=obj.label if query == "label" else None,
                    source=f"{origin} scene={scene_index} object={object_index}",
                )
            )
    return examples


@dataclass
class _Entry:
    line: int
    image: Path
    mask: Path
    prompt: str | None
    label: str | int | None


def read_manifest(path: str | os.PathLike) -> Iterator[Example]:
    """The examples of a JSONL manifest (format in the module docstring), in file order.

    Every line is checked first (JSON, fields, files present), so a bad line fails before any work starts; images
    and masks are then read one example at a time. Blank lines are skipped.

    Raises:
        ManifestError: names the manifest and line for invalid JSON, a missing or ill-typed field, both or neither
            of `prompt`/`label`, a missing file, an unreadable image or mask, or a mask of another size.
        FileNotFoundError: the manifest itself does not exist.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest file")
    entries = [_parse_line(manifest, number, text) for number, text in _lines(manifest)]
    if not entries:
        raise ManifestError(f"{manifest}: the manifest holds no example")
    return (_load(manifest, entry) for entry in entries)


def write_manifest(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write records ({"image", "prompt" | "label", "mask"}) as a JSONL manifest; the inverse of reading it."""
    path = Path(path)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def _lines(manifest: Path) -> Iterator[tuple[int, str]]:
    with manifest.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, text


def _parse_line(manifest: Path, number: int, text: str) -> _Entry:
    where = f"{manifest} line {number}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in ("image", "mask"):
        if name not in record:
            raise ManifestError(
                f"{where}: missing field {name!r} (each line needs 'image', 'mask' and 'prompt' or 'label')"
            )
        if not isinstance(record[name], str) or not record[name]:
            raise ManifestError(f"{where}: {name!r} must be a file path string, got {record[name]!r}")
    has_prompt, has_label = "prompt" in record, "label" in record
    if has_prompt == has_label:
        problem = "both" if has_prompt else "neither"
        raise ManifestError(
            f"{where}: give exactly one of 'prompt' (dual encoders) or 'label' (classifiers), got {problem}"
        )
    prompt, label = record.get("prompt"), record.get("label")
    if has_prompt and (not isinstance(prompt, str) or not prompt.strip()):
        raise ManifestError(f"{where}: 'prompt' must be a non-empty string, got {prompt!r}")
    if has_label and (isinstance(label, bool) or not isinstance(label, (str, int)) or label == ""):
        raise ManifestError(f"{where}: 'label' must be a class name or an integer id, got {label!r}")
    files = {}
    for name in ("image", "mask"):
        file = Path(record[name]).expanduser()
        file = file if file.is_absolute() else manifest.parent / file
        if not file.is_file():
            raise ManifestError(f"{where}: {name} file {record[name]!r} not found (looked for {file})")
        files[name] = file
    return _Entry(line=number, image=files["image"], mask=files["mask"], prompt=prompt, label=label)


def _load(manifest: Path, entry: _Entry) -> Example:
    where = f"{manifest} line {entry.line}"
    image = _open(entry.image, where, "image").convert("RGB")
    mask_image = _open(entry.mask, where, "mask")
    if mask_image.size != image.size:
        raise ManifestError(
            f"{where}: the mask is {mask_image.size[0]}x{mask_image.size[1]} but the image is "
            f"{image.size[0]}x{image.size[1]} (width x height); they must be the same size"
        )
    return Example(
        image=image,
        mask=mask_from_image(mask_image),
        prompt=entry.prompt,
        label=entry.label,
        source=f"{manifest.name}:{entry.line}",
    )


def mask_from_image(mask_image: Image.Image) -> np.ndarray:
    """A mask picture as bool [height, width]: nonzero pixels (colour, palette or alpha masks: in any colour
    channel, alpha ignored)."""
    if mask_image.mode in ("1", "L", "I", "I;16", "F"):
        return np.asarray(mask_image) != 0
    return np.asarray(mask_image.convert("RGB")).any(axis=-1)


def _open(file: Path, where: str, name: str) -> Image.Image:
    try:
        with Image.open(file) as picture:
            picture.load()
            return picture.copy()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ManifestError(f"{where}: cannot read the {name} {file} ({error})") from None
