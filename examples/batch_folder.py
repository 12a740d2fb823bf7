"""A folder of images, explained in batches (one trunk forward per batch), with a CSV of scores.

    python examples/batch_folder.py --out out/batch
    python examples/batch_folder.py --images photos/ --prompt "a dog" --prompt "a person" --batch-size 16 \
        --out out/batch

Writes `scores.csv` (image, label, score, and where the map peaks: peak_x, peak_y in the image's pixels), one
overlay `{image}_{prompt}.png` per image and prompt (images named by their path below the folders' common root,
cats/001.png -> cats-001). Without `--images`, the bundled example scenes are first
written to `{out}/images/` and that folder is explained.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)

from _common import image_paths, inputs, output_folder, parser, slug

CSV_COLUMNS = ("image", "label", "score", "peak_x", "peak_y")


def main(argv: list[str] | None = None) -> None:
    arguments = parser(__doc__.splitlines()[0], default_model="openai/clip-vit-base-patch16")
    arguments.add_argument("--batch-size", type=int, default=8, help="images per explanation (default 8)")
    arguments.add_argument("--num-scenes", type=int, default=6, help="without --images: how many example scenes")
    args = arguments.parse_args(argv)
    out = output_folder(args.out)
    prompts = args.prompt
    if not args.images:  # write the example scenes as a folder, to explain a folder like any other
        scenes = inputs(args, num_scenes=args.num_scenes)
        folder = output_folder(out / "images")
        for name, image in scenes.images:
            image.save(folder / f"{name}.png")
        args.images, prompts = [str(folder)], scenes.prompts
    elif not prompts:
        raise SystemExit("error: give at least one --prompt to explain your own images")
    paths = image_paths(args.images)

    explain = pipeline("legrad-explanation", model=args.model)
    results = explain([str(path) for path in paths], candidate_labels=prompts, batch_size=args.batch_size)
    # Images are named by their path below the folders' common root: cats/001.png and dogs/001.png stay apart.
    root = Path(os.path.commonpath([path.resolve().parent for path in paths]))
    with open(out / "scores.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for path, entries in zip(paths, results, strict=True):
            name = path.resolve().relative_to(root)
            for entry in entries:
                heatmap = np.asarray(entry["heatmap"])
                peak_y, peak_x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
                writer.writerow([name.as_posix(), entry["label"], f"{entry['score']:.6f}", int(peak_x), int(peak_y)])
                entry["overlay"].save(out / f"{slug(name.with_suffix('').as_posix())}_{slug(entry['label'])}.png")
    print(f"{len(paths)} images x {len(prompts)} prompts -> {out / 'scores.csv'}")


if __name__ == "__main__":
    main()
