"""A large checkpoint in bfloat16, placed by accelerate with `device_map="auto"` (GPUs, then CPU memory).

    python examples/large_checkpoint_bf16.py --out out/large
    python examples/large_checkpoint_bf16.py --model google/siglip-so400m-patch14-384 --images cats.jpg \
        --prompt "a cat" --out out/large

The model's weights and activations stay in bfloat16 (half the memory of float32); LeGrad's maps are computed
from them and returned as float32. Without a GPU, `device_map="auto"` puts the model on the CPU, where bfloat16
works too. Writes, per image, `{image}_{prompt}.png` and `{image}_grid.png`.
"""

from __future__ import annotations

import torch
from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)

from _common import inputs, output_folder, parser, save_grid, save_overlays


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0], default_model="openai/clip-vit-large-patch14").parse_args(argv)
    data = inputs(args)
    out = output_folder(args.out)
    explain = pipeline("legrad-explanation", model=args.model, device_map="auto", dtype=torch.bfloat16)
    placement = getattr(explain.model, "hf_device_map", None) or {"": str(explain.model.device)}
    print(f"{args.model}: {explain.model.dtype}, placed on {sorted(set(map(str, placement.values())))}")
    for name, image in data.images:
        results = explain(image, candidate_labels=data.prompts, return_tensors=True)
        save_overlays(out, name, results)
        save_grid(out / f"{name}_grid.png", image, results)


if __name__ == "__main__":
    main()
