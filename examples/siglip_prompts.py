"""SigLIP or SigLIP 2: prompt maps with and without the authors' null-prompt correction.

    python examples/siglip_prompts.py --out out/siglip
    python examples/siglip_prompts.py --model google/siglip2-base-patch16-224 --images cats.jpg \
        --prompt "a cat" --prompt "a remote control" --out out/siglip2

LeGrad explains SigLIP through its attention-pooling head. The correction (on by default) zeroes the map where the
map of the null prompt "a photo of a" is high, which removes the few background patches SigLIP attends to whatever
the prompt. Writes, per image, `{image}_grid.png` (corrected maps, with the sigmoid scores) and
`{image}_uncorrected_grid.png`.
"""

from __future__ import annotations

from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)

from _common import inputs, output_folder, parser, save_grid


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0], default_model="google/siglip-base-patch16-224").parse_args(argv)
    data = inputs(args)
    out = output_folder(args.out)
    explain = pipeline("legrad-explanation", model=args.model)
    for name, image in data.images:
        for correction, suffix in ((True, ""), (False, "_uncorrected")):
            results = explain(image, candidate_labels=data.prompts, correction=correction, return_tensors=True)
            save_grid(out / f"{name}{suffix}_grid.png", image, results)
        for result in results:
            print(f"{name}: {result['label']!r} sigmoid score {result['score']:.3f}")


if __name__ == "__main__":
    main()
