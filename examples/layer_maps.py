"""Per-layer maps: how each block of the vision encoder contributes to the final map, as one figure.

    python examples/layer_maps.py --out out/layers
    python examples/layer_maps.py --model google/siglip-base-patch16-224 --images cats.jpg --prompt "a cat" \
        --out out/layers

LeGrad's map is a sum over the explained blocks of one map per block. With `layers="all"` and
`return_layer_maps=True`, `LeGradExplainer` returns each block's map; the figure `{image}_layers.png` shows, for
each prompt, every block's map (each scaled to its own maximum, with the block's share of the summed relevance
under it) and the final map. Early blocks are usually diffuse; the last few carry most of the localization.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from transformers import AutoModelForZeroShotImageClassification, AutoProcessor

from transformers_legrad import LeGradExplainer, visualize

from _common import inputs, output_folder, parser

TILE_SIZE = 160
TITLE_HEIGHT = 30


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0], default_model="openai/clip-vit-base-patch16").parse_args(argv)
    data = inputs(args)
    out = output_folder(args.out)
    model = AutoModelForZeroShotImageClassification.from_pretrained(args.model)  # CLIP or SigLIP
    explainer = LeGradExplainer(model, AutoProcessor.from_pretrained(args.model))
    for name, image in data.images:
        # A square image is all the model sees whatever the processor does (no crop), so maps cover all of it.
        side = min(image.size)
        image = ImageOps.fit(image.convert("RGB"), (side, side))
        output = explainer.explain(images=image, text=data.prompts, layers="all", return_layer_maps=True)
        rows = []
        for k, prompt in enumerate(output.labels):
            layer_maps = output.layer_maps[0, k]  # [layers, h, w] on the patch grid
            shares = layer_maps.sum(dim=(1, 2)) / layer_maps.sum().clamp_min(1e-12)
            maps = torch.cat([layer_maps, output.grid_maps[0, k : k + 1]])  # the blocks, then their sum
            grid = visualize.grid_figure(
                image,
                maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12),
                [f"block {layer}" for layer in output.explained_layers] + ["LeGrad map (sum)"],
                scores=[*shares.tolist(), float(output.probabilities[0, k])],
                columns=len(output.explained_layers) + 2,
                tile_size=TILE_SIZE,
            )
            rows.append(
                _titled(grid, f"{prompt!r}: share of each block; score {float(output.probabilities[0, k]):.3f}")
            )
        _stack(rows).save(out / f"{name}_layers.png")
        print(f"{name}: blocks {output.explained_layers[0]}..{output.explained_layers[-1]} -> {name}_layers.png")


def _titled(picture: Image.Image, title: str) -> Image.Image:
    canvas = Image.new("RGB", (picture.width, picture.height + TITLE_HEIGHT), "white")
    ImageDraw.Draw(canvas).text((8, 6), title, fill=(20, 20, 20), font=ImageFont.load_default(size=18))
    canvas.paste(picture, (0, TITLE_HEIGHT))
    return canvas


def _stack(pictures: list[Image.Image]) -> Image.Image:
    canvas = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), "white")
    top = 0
    for picture in pictures:
        canvas.paste(picture, (0, top))
        top += picture.height
    return canvas


if __name__ == "__main__":
    main()
