"""A ViT classifier: maps of its 3 most probable classes (DeiT, DINOv2 classifiers work the same way).

    python examples/vit_top3.py --out out/vit
    python examples/vit_top3.py --images cats.jpg --top-k 5 --out out/vit

Writes, per image, `{image}_top{rank}.png` (the map of the class ranked `rank`) and `{image}_grid.png`, and prints
each class with its softmax probability.
"""

from __future__ import annotations

from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)

from _common import inputs, output_folder, parser, save_grid


def main(argv: list[str] | None = None) -> None:
    arguments = parser(__doc__.splitlines()[0], default_model="google/vit-base-patch16-224", prompts=False)
    arguments.add_argument("--top-k", type=int, default=3, help="how many classes to explain (default 3)")
    args = arguments.parse_args(argv)
    data = inputs(args)
    out = output_folder(args.out)
    classify = pipeline("legrad-explanation", model=args.model)
    for name, image in data.images:
        results = classify(image, top_k=args.top_k, return_tensors=True)  # most probable first
        for rank, result in enumerate(results, start=1):
            result["overlay"].save(out / f"{name}_top{rank}.png")
            print(f"{name}: #{rank} {result['label']!r} {result['score']:.3f}")
        save_grid(out / f"{name}_grid.png", image, results)


if __name__ == "__main__":
    main()
