"""The localization benchmark: LeGrad and the baselines on the same model, the same examples, the same metrics.

    from transformers_legrad.evaluation import benchmark, data, synthetic

    examples = data.examples_from_scenes(synthetic.generate(4, seed=benchmark.BENCHMARK_SEED), query="prompt")
    result = benchmark.run_benchmark(model, processor, examples, methods=["legrad", "rollout"])
    print(benchmark.format_table(result))

`legrad benchmark` (`transformers_legrad.cli.benchmark`) runs it from the command line on the bundled demo models,
a JSONL manifest or a data set with masks, and writes the results as JSON.

For every example (an image, a prompt or class, the object's mask; see `data`) and every method, the map is
computed with the method's `explain` (timed), placed on the original image (`geometry`), and scored against the
mask (`metrics`): mIoU, pixel accuracy and mAP as on ImageNet-Segmentation (threshold 0.5), the plain foreground
AP, the open-vocabulary p-mIoU (mean foreground IoU), the pointing game, and the positive / negative perturbation
AUCs. Those re-run the model on the processed image with 10% .. 90% of its patches set to 0 in normalized pixel
space (the processor's mean colour), most / least relevant first according to the method's patch grid map, and
integrate the model's own score for the prompt or class (its logit: `LeGradOutput.scores`) over the removed
fraction.

The command's default data: `DEFAULT_SCENES` scenes of `synthetic.generate(seed=BENCHMARK_SEED)`, a seed none of
the demo models was trained or validated on (scripts/train_demo_models.py trains model m on seeds 1_000_000 * (m +
1) + step, i.e. in [1_000_000, 4_000_000) for any recipe under a million steps (the ViT on random 62-bit seeds
drawn from a generator seeded so), and validates on 20_240_404), one example per object.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from huggingface_hub.utils import tqdm
from PIL import Image

from .. import geometry
from ..engine import eval_mode
from ..explainer import LeGradExplainer
from . import metrics
from .baselines import BASELINES, METHODS, eager_copy, make_explainer
from .data import Example

__all__ = [
    "BENCHMARK_SEED",
    "DEFAULT_SCENES",
    "METRICS",
    "example_figure",
    "explain_examples",
    "figure_examples",
    "format_table",
    "run_benchmark",
]

#: Seed of the default benchmark scenes (2026-11-26): not a training or validation seed of the demo models.
BENCHMARK_SEED = 20_261_126
DEFAULT_SCENES = 200
#: The per-method entries of a result, in table order.
METRICS: tuple[str, ...] = (
    "miou",
    "pixel_acc",
    "map",
    "fg_ap",
    "p_miou",
    "pointing_game",
    "pos_auc",
    "neg_auc",
    "ms_per_image",
)
_HEADERS = {
    "miou": "mIoU",
    "pixel_acc": "pixel acc",
    "map": "mAP",
    "fg_ap": "fg AP",
    "p_miou": "p-mIoU",
    "pointing_game": "pointing",
    "pos_auc": "pos AUC (lower better)",
    "neg_auc": "neg AUC",
    "ms_per_image": "ms/image",
}
_REMOVAL = "patches set to 0 in normalized pixel space (the processor's mean colour)"


class _Runner:
    """The methods' explainers for one model, and what every method's evaluation of an example shares."""

    def __init__(self, model, processor, methods: Sequence[str], image_size) -> None:
        unknown = [method for method in methods if method not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown methods {unknown or '(none given)'}; known: {', '.join(METHODS)}.")
        self.model = model
        self.inputs = LeGradExplainer(model, processor)  # prompts, targets and images as every method sees them
        self.adapter = self.inputs.adapter
        self.image_size = image_size
        self.size_kwargs = self.inputs.image_processor_kwargs(image_size)
        shared = eager_copy(model) if any(method in BASELINES for method in methods) else None
        self.explainers = {method: make_explainer(method, model, processor, eager_model=shared) for method in methods}
        self._directions: dict[str | int, torch.Tensor] = {}

    def query_arguments(self, example: Example) -> dict:
        if self.adapter.is_dual_encoder:
            if example.prompt is None:
                raise ValueError(
                    f"{example.source}: {type(self.model).__name__} explains text prompts; the example has none."
                )
            return {"text": [example.prompt]}
        if example.label is None:
            raise ValueError(
                f"{example.source}: {type(self.model).__name__} is a classifier; the example has no label."
            )
        return {"targets": [example.label]}

    def explain(self, method: str, example: Example):
        """(output, heatmap float32 [height, width] on the original image, seconds spent in `explain`)."""
        arguments = self.query_arguments(example)
        start = time.perf_counter()
        output = self.explainers[method].explain(images=example.image, image_size=self.image_size, **arguments)
        seconds = time.perf_counter() - start
        processor, original_size = self.inputs.image_processor, example.image.size
        heatmaps = geometry.maps_on_original(
            output.heatmaps[0, :1], output.image_sizes[0], original_size, processor, self.size_kwargs
        )
        heatmap = heatmaps[0]
        return output, heatmap.numpy(), seconds

    def pixel_values(self, example: Example) -> torch.Tensor:
        processed = self.inputs.image_processor(images=example.image, return_tensors="pt", **self.size_kwargs)
        pixel_values = processed["pixel_values"]
        if pixel_values.dim() != 4:
            raise ValueError(
                f"{type(self.model).__name__} takes pre-patchified images; the perturbation test needs [channels, "
                "height, width] images: pass perturbation=False."
            )
        return pixel_values[0]

    def scorer(self, example: Example):
        """The model's own score for the example's prompt or class, as a function of a batch of images."""
        query = example.query
        if query not in self._directions:
            # The explainer's own validation and text tower, through its public seam (the image is only checked).
            request = self.inputs.prepare_request(
                images=example.image, image_size=self.image_size, **self.query_arguments(example)
            )
            if request.directions is not None:
                self._directions[query] = request.directions
            else:
                self._directions[query] = torch.nn.functional.one_hot(request.targets, request.num_labels).float()
        direction = self._directions[query]
        adapter = self.adapter

        def score(images: torch.Tensor) -> torch.Tensor:
            images = images.to(device=adapter.input_device, dtype=adapter.input_dtype)
            pixels = adapter.prepare_pixels(images)
            with torch.no_grad(), eval_mode(self.model):
                features = adapter.image_features(pixels)
            directions = direction.to(features.device).unsqueeze(0).expand(images.shape[0], -1, -1)
            return adapter.final_scores(features, directions)[:, 0].cpu()

        return score


def run_benchmark(
    model,
    processor,
    examples: Iterable[Example],
    methods: Sequence[str] = METHODS,
    n: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    perturbation: bool = True,
    *,
    threshold: metrics.Threshold = 0.5,
    pointing_tolerance: float = 0.0,
    model_name: str | None = None,
    data: dict | None = None,
    progress: bool = False,
    per_example: bool = False,
) -> dict:
    """Score every method on every example.

    Args:
        model, processor: a model `LeGradExplainer` supports, and its processor.
        examples: `data.Example`s with prompts (dual encoders) or labels (classifiers).
        methods: names from `baselines.METHODS`.
        n: use only the first n examples (None: all).
        image_size: explain at this processed size (as `LeGradExplainer.explain(image_size=...)`).
        perturbation: run the perturbation tests (per example and method, two batched forwards of 10 images).
        threshold: binarization threshold of the segmentation metrics (see `metrics.binarize`).
        pointing_tolerance: the pointing game's tolerance in pixels.
        model_name: how the model is named in the result (default: its `name_or_path`).
        data: a description of the examples, stored as is under "data".
        progress: show a progress bar on stderr.
        per_example: also return every example's values under "examples": [{"source", "query", "mask_fraction",
            "methods": {method: {"pixel_acc", "miou", "ap", "fg_ap", "foreground_iou", "pointing", "ms", "pos_auc",
            "neg_auc"}}}], e.g. for paired confidence intervals between methods.

    Returns:
        A JSON-ready dict: {"model", "model_class", "n" (examples), "data", "settings", "chance": {"pointing_game"},
        "methods": {method: {"miou", "pixel_acc", "map", "fg_ap", "p_miou", "pointing_game", "pos_auc", "neg_auc",
        "ms_per_image", "pos_curve", "neg_curve"}}}; the AUCs and curves are None without `perturbation`.
        `ms_per_image` is the mean wall time of one `explain` call (one image, one prompt), after one warm-up call.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` must be a positive integer or None, got {n!r}.")
    runner = _Runner(model, processor, list(methods), image_size)
    segmentation = {method: metrics.SegmentationMetrics(threshold) for method in runner.explainers}
    curves = {method: {"pos": [], "neg": []} for method in runner.explainers}
    records: list[dict] = []  # per example: {"source", "query", "mask_fraction", "methods": {method: values}}
    with tqdm(desc="benchmark", unit="example", disable=not progress, total=n) as bar:
        for example in itertools.islice(examples, n):
            if not records:
                for method in runner.explainers:  # warm-up: first-call costs are not what ms/image should show
                    runner.explain(method, example)
            mask = np.asarray(example.mask, dtype=bool)
            record = {"source": example.source, "query": example.query, "mask_fraction": float(mask.mean())}
            record["methods"] = {}
            pixel_values = runner.pixel_values(example) if perturbation else None
            score = runner.scorer(example) if perturbation else None
            for method in runner.explainers:
                output, heatmap, seconds = runner.explain(method, example)
                values = segmentation[method].add(heatmap, mask)
                values["pointing"] = metrics.pointing_game(heatmap, mask, pointing_tolerance)
                values["ms"] = 1000.0 * seconds
                if perturbation:
                    grid_h, grid_w = output.grid_shapes[0]
                    grid_map = output.grid_maps[0, 0, :grid_h, :grid_w]
                    for key, most_relevant_first in (("pos", True), ("neg", False)):
                        curve = metrics.perturbation_curve(score, pixel_values, grid_map, most_relevant_first)
                        curves[method][key].append(curve)
                        values[f"{key}_auc"] = metrics.perturbation_auc(curve)
                record["methods"][method] = values
            records.append(record)
            bar.update(1)
    if not records:
        raise ValueError("no examples to benchmark.")

    results = {}
    for method in runner.explainers:
        method_values = [record["methods"][method] for record in records]
        entry = dict(segmentation[method].result())
        entry["pointing_game"] = float(np.mean([values["pointing"] for values in method_values]))
        for key in ("pos", "neg"):
            if perturbation:
                entry[f"{key}_auc"] = float(np.mean([values[f"{key}_auc"] for values in method_values]))
                entry[f"{key}_curve"] = [float(v) for v in np.mean(curves[method][key], axis=0)]
            else:
                entry[f"{key}_auc"] = entry[f"{key}_curve"] = None
        entry["ms_per_image"] = float(np.mean([values["ms"] for values in method_values]))
        results[method] = {key: entry[key] for key in (*METRICS, "pos_curve", "neg_curve")}
    result = {
        "model": model_name or str(getattr(model, "name_or_path", "") or type(model).__name__),
        "model_class": type(model).__name__,
        "n": len(records),
        "data": data if data is not None else {"source": "examples"},
        "settings": {
            "threshold": threshold,
            "pointing_tolerance": pointing_tolerance,
            "image_size": image_size,
            "perturbation": {
                "fractions": list(metrics.PERTURBATION_FRACTIONS),
                "removal": _REMOVAL,
                "score": "the model's own score for the prompt or class (LeGradOutput.scores: logit)",
            }
            if perturbation
            else None,
        },
        "chance": {"pointing_game": float(np.mean([record["mask_fraction"] for record in records]))},
        "methods": results,
    }
    if per_example:
        result["examples"] = records
    return result


def format_table(result: dict) -> str:
    """A Markdown table of one `run_benchmark` result: one row per method, one column per metric."""
    header = ["method", *(_HEADERS[key] for key in METRICS)]
    rows = []
    for method, values in result["methods"].items():
        cells = [method]
        for key in METRICS:
            value = values.get(key)
            if value is None:
                cells.append("-")
            else:
                cells.append(f"{value:.1f}" if key == "ms_per_image" else f"{value:.3f}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    title = f"{result['model']} ({result['model_class']}), {result['n']} examples"
    chance = result.get("chance", {}).get("pointing_game")
    footer = "pointing chance (mean mask area): " + (f"{chance:.3f}" if chance is not None else "-")
    return "\n".join(
        [title, "", line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows), "", footer]
    )


# --- figure ------------------------------------------------------------------------------------------------------
def explain_examples(
    model, processor, examples: Sequence[Example], methods: Sequence[str] = METHODS, image_size=None
) -> list[dict[str, np.ndarray]]:
    """Each method's heatmap on each example's original image: one {method: float32 [height, width]} per example."""
    runner = _Runner(model, processor, list(methods), image_size)
    return [{method: runner.explain(method, example)[1] for method in runner.explainers} for example in examples]


def example_figure(
    examples: Sequence[Example],
    heatmaps: Sequence[dict[str, np.ndarray]],
    title: str = "",
    tile_size: int = 160,
    alpha: float = 0.8,
) -> Image.Image:
    """One row per example: the image, its mask, and each method's map over the image (`visualize.grid_figure`).

    `alpha` is the maps' weight in the overlays: high, so the maps read clearly against coloured objects.
    """
    from .. import visualize

    rows = []
    for example, maps_by_method in zip(examples, heatmaps, strict=True):
        picture = example.image
        if max(picture.size) < tile_size:  # small synthetic scenes stay crisp when enlarged
            scale = tile_size / max(picture.size)
            size = (round(picture.width * scale), round(picture.height * scale))
            picture = picture.resize(size, Image.Resampling.NEAREST)
        tiles = [example.mask.astype(np.float32), *maps_by_method.values()]
        labels = [f"mask: {example.query}", *maps_by_method]
        rows.append(
            visualize.grid_figure(
                picture, np.stack(tiles), labels, alpha=alpha, columns=len(tiles) + 1, tile_size=tile_size
            )
        )
    title_height = 28 if title else 0
    width = max(row.width for row in rows)
    figure = Image.new("RGB", (width, title_height + sum(row.height for row in rows)), (255, 255, 255))
    if title:
        from PIL import ImageDraw

        ImageDraw.Draw(figure).text((8, 8), title, fill=(20, 20, 20))
    top = title_height
    for row in rows:
        figure.paste(row, (0, top))
        top += row.height
    return figure


def figure_examples(examples: Iterable[Example], count: int) -> list[Example]:
    """`count` examples, starting with every object of the first image that has several (prompts side by side)."""
    groups: list[list[Example]] = []
    for example in examples:
        if groups and example.image is groups[-1][0].image:
            groups[-1].append(example)
        else:
            groups.append([example])
        if sum(len(group) for group in groups) >= 4 * count + 8:
            break
    groups.sort(key=lambda group: len(group) < 2)  # stable: the first multi-object image first
    return [example for group in groups for example in group][:count]
