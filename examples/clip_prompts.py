"""CLIP with several prompts: one overlay per prompt and a labelled grid, with the `legrad-explanation` pipeline.

    python examples/clip_prompts.py --out out/clip
    python examples/clip_prompts.py --images cats.jpg --prompt "a cat" --prompt "a remote control" --out out/clip

Writes, per image, `{image}_{prompt}.png` (the map over the image) and `{image}_grid.png` (the image, every
prompt's overlay with its softmax score, and a colour bar).
"""

from __future__ import annotations

from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)

from _common import inputs, output_folder, parser, save_grid, save_overlays


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0], default_model="openai/clip-vit-base-patch16").parse_args(argv)
    data = inputs(args)
    out = output_folder(args.out)
    explain = pipeline("legrad-explanation", model=args.model)
    for name, image in data.images:
        results = explain(image, candidate_labels=data.prompts, return_tensors=True)  # sorted by score
        save_overlays(out, name, results)
        save_grid(out / f"{name}_grid.png", image, results)


if __name__ == "__main__":
    main()
