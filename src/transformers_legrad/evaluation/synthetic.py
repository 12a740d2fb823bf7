"""Synthetic scenes of coloured shapes with exact object masks: ground truth for localization checks.

Each scene is a small RGB image with 1 to 4 objects ("red circle", "blue star", ...) on a textured background (a
smooth random colour gradient, a low-frequency colour field and pixel noise). Objects may overlap: later objects
are drawn over earlier ones, and each object's mask holds exactly the pixels where it is visible. An object hidden
so much that less than `MIN_VISIBLE_FRACTION` of it shows is left out of the scene (and not drawn), so every listed
object can be seen and named. Within a scene, no two objects share both colour and shape, so a caption such as
"a red circle" names exactly one object.

The demo models of `transformers_legrad.demo` are trained on these scenes, and the masks let a map be scored (e.g.
the pointing game, `metrics.pointing_game`: does the map's maximum fall inside the object it was asked about?).

Example:
    >>> from transformers_legrad.evaluation.synthetic import generate
    >>> scene = generate(1, seed=0)[0]
    >>> scene.image.size, [obj.label for obj in scene.objects]
    ((64, 64), ['green ring', 'yellow star'])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "COLOURS",
    "LABELS",
    "MIN_VISIBLE_FRACTION",
    "SHAPES",
    "Scene",
    "SceneObject",
    "caption",
    "generate",
    "largest_object",
    "save_scenes",
]

#: Object colours and their nominal RGB values (each object gets a small random variation of its colour).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 175, 55),
    "blue": (35, 75, 235),
    "yellow": (245, 220, 35),
    "purple": (150, 45, 205),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
#: Every object label, "colour shape", colours outer, shapes inner.
LABELS: tuple[str, ...] = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
#: An object of which less than this fraction is visible is left out of its scene.
MIN_VISIBLE_FRACTION = 0.6

# Sizes are fractions of the image side (64 px: radius 10 to 19 px, 2.5 to 5 patches of 8 px across).
_MIN_RADIUS, _MAX_RADIUS = 0.16, 0.30
_COLOUR_JITTER = 14.0  # standard deviation per channel, clipped at twice that
_PIXEL_NOISE = 7.0
_MAX_OBJECTS = 4
# Shapes stand upright (triangles point up, squares and crosses are axis-aligned): orientation is not what the
# shape names are about, and a tiny ViT trained for minutes on a CPU learns upright shapes much faster (a random
# tilt of up to 15 degrees cost about 10 points of accuracy at equal training).
_ORIENTATION = {"circle": 0.0, "ring": 0.0, "square": 0.0, "cross": 0.0, "triangle": -np.pi / 2}


@dataclass
class SceneObject:
    """One visible object of a scene.

    Attributes:
        colour: a key of `COLOURS`.
        shape: one of `SHAPES`.
        mask: bool [height, width], True where the object is visible (occluded parts excluded).
        full_mask: bool [height, width], the whole shape, including the parts hidden by later objects.
        center: (x, y) of the object's full (unoccluded) shape, in pixels.
        radius: the radius of the circle the full shape is inscribed in, in pixels.
    """

    colour: str
    shape: str
    mask: np.ndarray = field(repr=False)
    full_mask: np.ndarray = field(repr=False)
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0

    @property
    def label(self) -> str:
        """ "colour shape", e.g. "red circle"."""
        return f"{self.colour} {self.shape}"

    @property
    def caption(self) -> str:
        """The object as a prompt, e.g. "a red circle"."""
        return caption(self.label)

    @property
    def area(self) -> int:
        """Visible pixels."""
        return int(self.mask.sum())


@dataclass
class Scene:
    """A generated image and its objects, in drawing order (later objects are on top).

    Attributes:
        image: PIL RGB image, image_size x image_size.
        objects: 1 to 4 visible objects, with distinct labels.
    """

    image: Image.Image
    objects: list[SceneObject]

    @property
    def labels(self) -> list[str]:
        return [obj.label for obj in self.objects]

    @property
    def captions(self) -> list[str]:
        return [obj.caption for obj in self.objects]


def caption(label: str) -> str:
    """The prompt for an object label: "red circle" -> "a red circle"."""
    return f"a {label}"


def generate(
    n: int, seed: int = 0, image_size: int = 64, *, min_objects: int = 1, max_objects: int = _MAX_OBJECTS
) -> list[Scene]:
    """Generate `n` scenes, the same ones for the same arguments.

    Args:
        n: number of scenes.
        seed: seed of the numpy random generator that draws everything.
        image_size: side of the square images, in pixels (at least 16).
        min_objects, max_objects: bounds on the number of objects drawn (1 <= min <= max <= 4), uniform in
            between. A scene may end up with fewer than `min_objects` visible objects (never fewer than one) when
            occlusion hides one too much.

    Returns:
        A list of `n` scenes.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`n` must be a non-negative integer, got {n!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"`image_size` must be an integer >= 16, got {image_size!r}.")
    if not 1 <= min_objects <= max_objects <= _MAX_OBJECTS:
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {_MAX_OBJECTS}, got min_objects={min_objects}, "
            f"max_objects={max_objects}."
        )
    rng = np.random.default_rng(seed)
    grid = _Grid(int(image_size))
    return [_scene(rng, grid, min_objects, max_objects) for _ in range(int(n))]


def largest_object(scene: Scene, margin: float = 1.0) -> SceneObject | None:
    """The object with the largest visible area, or None unless it is `margin` times larger than every other."""
    ordered = sorted(scene.objects, key=lambda obj: obj.area, reverse=True)
    if len(ordered) > 1 and ordered[0].area < margin * ordered[1].area:
        return None
    return ordered[0]


# --- writing scenes as a data set -------------------------------------------------------------------------------
def save_scenes(scenes, folder: str | os.PathLike, layout: str = "imagefolder") -> Path:
    """Write scenes as a data set (read back with `datasets_io.read_dataset`): for tests, examples and throughput runs.

    Args:
        scenes: `generate(...)` scenes.
        folder: where to write (created).
        layout: "imagefolder": `scene-NNNNN.png` files and a `metadata.jsonl` with each scene's "prompts" (one
            caption per object); "parquet": one `data.parquet` with one row per object: "image", "mask", "prompt",
            "label" (for the benchmark).

    Returns:
        What to pass as the data set: the folder (imagefolder) or the parquet file.
    """
    import datasets

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "imagefolder":
        lines = []
        for index, scene in enumerate(scenes):
            name = f"scene-{index:05d}.png"
            scene.image.save(folder / name)
            lines.append(json.dumps({"file_name": name, "prompts": scene.captions}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        return folder
    if layout != "parquet":
        raise ValueError(f"`layout` must be 'imagefolder' or 'parquet', got {layout!r}.")
    columns: dict[str, list] = {"image": [], "mask": [], "prompt": [], "label": []}
    for scene in scenes:
        for obj in scene.objects:
            columns["image"].append(scene.image)
            columns["mask"].append(_png(obj.mask))
            columns["prompt"].append(obj.caption)
            columns["label"].append(obj.label)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "prompt": datasets.Value("string"),
            "label": datasets.Value("string"),
        }
    )
    path = folder / "data.parquet"
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def _png(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255)


# --- drawing ----------------------------------------------------------------------------------------------------
class _Grid:
    """Pixel-centre coordinates of a square image, computed once per `generate` call."""

    def __init__(self, size: int):
        self.size = size
        coords = np.arange(size, dtype=np.float32) + 0.5
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")
        self.unit = np.linspace(0.0, 1.0, size, dtype=np.float32)


def _scene(rng: np.random.Generator, grid: _Grid, min_objects: int, max_objects: int) -> Scene:
    pixels = _background(rng, grid)
    count = int(rng.integers(min_objects, max_objects + 1))
    drawn: list[tuple[str, str, np.ndarray, tuple[float, float], float]] = []
    used: set[tuple[str, str]] = set()
    while len(drawn) < count:
        colour, shape = _distinct_label(rng, used)
        used.add((colour, shape))
        radius = float(rng.uniform(_MIN_RADIUS, _MAX_RADIUS)) * grid.size
        margin = 0.8 * radius
        center = (float(rng.uniform(margin, grid.size - margin)), float(rng.uniform(margin, grid.size - margin)))
        drawn.append((colour, shape, _shape_mask(shape, grid, center, radius, _ORIENTATION[shape]), center, radius))

    # Later objects cover earlier ones; an object that shows too little is dropped (which only uncovers others).
    visible = _visible_masks([item[2] for item in drawn])
    keep = [i for i, (mask, item) in enumerate(zip(visible, drawn, strict=True)) if _shows_enough(mask, item[2])]
    if not keep:  # at least the top object is always fully visible
        keep = [len(drawn) - 1]
    drawn = [drawn[i] for i in keep]
    visible = _visible_masks([item[2] for item in drawn])

    objects = []
    for (colour, shape, full, center, radius), mask in zip(drawn, visible, strict=True):
        jitter = np.clip(rng.normal(0.0, _COLOUR_JITTER, size=3), -2 * _COLOUR_JITTER, 2 * _COLOUR_JITTER)
        rgb = np.asarray(COLOURS[colour], dtype=np.float32) + jitter
        pixels[full] = rgb  # drawn in order: later objects overwrite the covered parts
        objects.append(SceneObject(colour=colour, shape=shape, mask=mask, full_mask=full, center=center, radius=radius))
    pixels += rng.normal(0.0, _PIXEL_NOISE, size=pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
    return Scene(image=image, objects=objects)


def _distinct_label(rng: np.random.Generator, used: set[tuple[str, str]]) -> tuple[str, str]:
    colours = list(COLOURS)
    while True:
        label = (colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))])
        if label not in used:
            return label


def _visible_masks(full_masks: list[np.ndarray]) -> list[np.ndarray]:
    covered = np.zeros_like(full_masks[0]) if full_masks else None
    visible = []
    for full in reversed(full_masks):
        visible.append(full & ~covered)
        covered = covered | full
    return visible[::-1]


def _shows_enough(visible: np.ndarray, full: np.ndarray) -> bool:
    full_area = full.sum()
    return full_area > 0 and visible.sum() >= MIN_VISIBLE_FRACTION * full_area


def _background(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """A muted two-colour linear gradient plus a smooth low-frequency colour field: float32 [size, size, 3]."""
    size = grid.size
    grey = rng.uniform(70.0, 185.0)
    ends = grey + rng.normal(0.0, 22.0, size=(2, 3))  # low saturation: objects' colours stay distinct
    direction = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.cos(direction) * (grid.x / size - 0.5) + np.sin(direction) * (grid.y / size - 0.5) + 0.5
    ramp = np.clip(ramp, 0.0, 1.0)[..., None]
    pixels = ends[0] * (1.0 - ramp) + ends[1] * ramp
    coarse = rng.normal(0.0, 12.0, size=(5, 5, 3)).astype(np.float32)
    pixels += _upsample(coarse, size)
    return pixels.astype(np.float32)


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a [k, k, channels] field to [size, size, channels]."""
    k = coarse.shape[0]
    position = np.linspace(0.0, k - 1.0, size, dtype=np.float32)
    low = np.minimum(position.astype(np.int64), k - 2)
    weight = (position - low)[:, None]
    rows = coarse[low] * (1 - weight[..., None]) + coarse[low + 1] * weight[..., None]  # [size, k, channels]
    return rows[:, low] * (1 - weight[None]) + rows[:, low + 1] * weight[None]


def _shape_mask(shape: str, grid: _Grid, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Bool [size, size] mask of a full shape inscribed in the circle (center, radius), rotated by `angle`."""
    dx, dy = grid.x - center[0], grid.y - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # coordinates in the shape's own rotated frame
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "ring":
        distance2 = dx * dx + dy * dy
        return (distance2 <= radius * radius) & (distance2 >= (0.55 * radius) ** 2)
    if shape == "square":
        half = 0.78 * radius
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "cross":
        arm, half = 0.95 * radius, 0.3 * radius
        return ((np.abs(u) <= arm) & (np.abs(v) <= half)) | ((np.abs(u) <= half) & (np.abs(v) <= arm))
    if shape == "triangle":
        # Equilateral: inside the three half-planes whose normals point to the edge midpoints (distance r/2).
        inside = np.ones_like(dx, dtype=bool)
        for k in range(3):
            theta = 2.0 * np.pi * k / 3.0 + np.pi
            inside &= np.cos(theta) * u + np.sin(theta) * v <= 0.5 * radius
        return inside
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
