"""Make the README's detection picture, `docs/legrad_detection_example.png`, with the tests' constructed detector.

    python scripts/detection_example.py

The detector is `tests/tiny_owl.make_bright_object_detector()`: a one-block `OwlViTForObjectDetection` (48 px,
8 px patches) whose weights are constructed, not trained, so that every text query scores bright patches and its
attention carries brightness (see `_construct_bright_detector`). The scene is black with a white square and a dark
grey one. The picture shows the scene, then the pipeline's overlay of the best box for "a white square" with the box
drawn, both enlarged 6x (nearest neighbour) to be visible. Prints the pipeline's result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the constructed detector lives with the tests that check it

from transformers import pipeline  # noqa: E402

import transformers_legrad  # noqa: E402, F401  (registers the task)

from tiny_owl import PATCH_SIZE, make_bright_object_detector  # noqa: E402

OUT = ROOT / "docs" / "legrad_detection_example.png"
SCALE = 6


def scene() -> Image.Image:
    """48 x 48, black, a white square of 2 x 2 patches at patch (1, 3) and a dark grey one at patch (3, 0)."""
    pixels = np.zeros((48, 48, 3), dtype=np.uint8)
    pixels[PATCH_SIZE : 3 * PATCH_SIZE, 3 * PATCH_SIZE : 5 * PATCH_SIZE] = 255
    pixels[3 * PATCH_SIZE : 5 * PATCH_SIZE, 0 : 2 * PATCH_SIZE] = 60
    return Image.fromarray(pixels)


def main() -> None:
    detector = make_bright_object_detector()
    explain = pipeline("legrad-explanation", model=detector.path)
    picture = scene()
    result = explain(picture, candidate_labels=["a white square"], threshold=0.5, top_k=1)[0]
    print({key: result[key] for key in ("label", "score", "box")})
    tiles = [picture, result["overlay"]]
    width, height = picture.width * SCALE, picture.height * SCALE
    canvas = Image.new("RGB", (2 * width + 8, height), (255, 255, 255))
    for index, tile in enumerate(tiles):
        canvas.paste(tile.resize((width, height), Image.NEAREST), (index * (width + 8), 0))
    OUT.parent.mkdir(exist_ok=True)
    canvas.save(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
