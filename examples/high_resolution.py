"""Higher resolution: maps at the model's native input size and at `image_size=448`, side by side.

    python examples/high_resolution.py --out out/highres
    python examples/high_resolution.py --images cats.jpg --prompt "a cat" --image-size 672 --out out/highres

At 448 pixels a ViT-B/16 sees a 28 x 28 patch grid instead of 14 x 14 (its position embeddings are interpolated),
so the maps follow object boundaries more closely: the setting of the authors' demo. Writes, per image,
`{image}_{prompt}_{size}px.png` and `{image}_compare.png` (each prompt at the native size, then at `--image-size`).
"""

from __future__ import annotations

from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)
from transformers_legrad import visualize

from _common import inputs, output_folder, parser, slug


def main(argv: list[str] | None = None) -> None:
    arguments = parser(__doc__.splitlines()[0], default_model="openai/clip-vit-base-patch16")
    arguments.add_argument("--image-size", type=int, default=448, help="the larger input size (default 448)")
    args = arguments.parse_args(argv)
    data = inputs(args)
    out = output_folder(args.out)
    explain = pipeline("legrad-explanation", model=args.model)
    for name, image in data.images:
        native = explain(image, candidate_labels=data.prompts, return_tensors=True)
        larger = {
            r["label"]: r
            for r in explain(image, candidate_labels=data.prompts, image_size=args.image_size, return_tensors=True)
        }
        maps, labels, scores = [], [], []
        for result in native:
            bigger = larger[result["label"]]
            bigger["overlay"].save(out / f"{name}_{slug(result['label'])}_{args.image_size}px.png")
            maps += [result["map"], bigger["map"]]
            labels += [f"{result['label']} (native)", f"{result['label']} ({args.image_size} px)"]
            scores += [result["score"], bigger["score"]]
            print(
                f"{name}: {result['label']!r} native {result['score']:.3f}, {args.image_size} px {bigger['score']:.3f}"
            )
        visualize.save_grid(out / f"{name}_compare.png", image, maps, labels, scores=scores)


if __name__ == "__main__":
    main()
