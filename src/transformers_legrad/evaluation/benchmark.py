"""The localization benchmark: LeGrad and the baselines on the same model, the same examples, the same metrics.

    legrad benchmark --json results.json                        # the bundled demo models on generated scenes
    legrad benchmark --model DIR --manifest data.jsonl --json results.json --figure example.png
    legrad benchmark --model DIR --dataset data.parquet --prompt-column prompt --mask-column mask --json results.json

For every example (an image, a prompt or class, the object's mask; see `data`) and every method, the map is
computed with the method's `explain` (timed), placed on the original image (`geometry`), and scored against the
mask (`metrics`): mIoU, pixel accuracy and mAP as on ImageNet-Segmentation (threshold 0.5), the plain foreground
AP, the open-vocabulary p-mIoU (mean foreground IoU), the pointing game, and the positive / negative perturbation
AUCs. Those re-run the model on the processed image with 10% .. 90% of its patches set to 0 in normalized pixel
space (the processor's mean colour), most / least relevant first according to the method's patch grid map, and
integrate the model's own score for the prompt or class (its logit: `LeGradOutput.scores`) over the removed
fraction.

Default data: `DEFAULT_SCENES` scenes of `synthetic.generate(seed=BENCHMARK_SEED)`, a seed none of the demo models
was trained or validated on (scripts/train_demo_models.py trains model m on seeds 1_000_000 * (m + 1) + step, i.e.
in [1_000_000, 4_000_000) for any recipe under a million steps (the ViT on random 62-bit seeds drawn from a
generator seeded so), and validates on 20_240_404), one example per object.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.utils import tqdm
from PIL import Image

from .. import geometry
from ..engine import eval_mode
from ..explainer import LeGradExplainer
from . import metrics, synthetic
from .baselines import BASELINES, METHODS, eager_copy, make_explainer
from .data import Example, ManifestError, examples_from_scenes, read_manifest

__all__ = [
    "BENCHMARK_SEED",
    "DEFAULT_SCENES",
    "METRICS",
    "example_figure",
    "explain_examples",
    "format_table",
    "main",
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
        width, height = example.image.size
        region = geometry.processed_region(
            self.inputs.image_processor, width, height, self.size_kwargs.get("size"), self.size_kwargs.get("crop_size")
        )
        processed_height, processed_width = output.image_sizes[0]
        heatmap = output.heatmaps[0, 0, :processed_height, :processed_width]
        return output, geometry.heatmap_on_original(heatmap, region, width, height).numpy(), seconds

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
            if self.adapter.is_dual_encoder:
                self._directions[query] = self.inputs._prompt_directions([query], None)[0]
            else:
                target = self.inputs._validate_targets([query])
                self._directions[query] = torch.nn.functional.one_hot(target, self.adapter.num_labels).float()
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


# --- command line ------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="legrad benchmark",
        description="Localization benchmark: LeGrad and baselines scored against object masks.",
    )
    parser.add_argument("--manifest", type=Path, help="JSONL manifest (default: generated synthetic scenes)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="Hub id, local folder, or a bundled demo model name (clip, siglip, vit); repeatable. Default: all "
        "bundled demo models",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"scenes to generate (default {DEFAULT_SCENES}), or manifest examples to use (default all)",
    )
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED, help=f"scene seed (default {BENCHMARK_SEED})")
    parser.add_argument("--scene-size", type=int, default=64, help="side of generated scenes in pixels (default 64)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--image-size", type=int, default=None, help="explain at this processed size")
    parser.add_argument("--threshold", default="0.5", help="segmentation threshold: a number or 'mean'")
    parser.add_argument("--no-perturbation", action="store_true", help="skip the perturbation tests")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: as loaded)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--json",
        required=True,
        type=Path,
        help='write the results here: {"runs": [one per model], and for one model "methods": {method: metrics}}',
    )
    parser.add_argument("--figure", type=Path, default=None, help="write an example figure (PNG) here")
    parser.add_argument("--figure-examples", type=int, default=2, help="examples per model in the figure")
    parser.add_argument("--per-example", action="store_true", help="also write every example's values to the JSON")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    from ..cli import add_dataset_arguments

    add_dataset_arguments(parser)
    parser.add_argument("--prompt", default=None, help="with --dataset: one prompt (or class) for every row")
    parser.add_argument("--mask-column", default="mask", help="with --dataset: the object-mask column (mask)")
    return parser


def _load_model(name: str, device: str | None):
    """(model, processor, display name, local folder or None) for a demo model name, a local folder or a Hub id."""
    from .. import cli

    if name in _demo_names() and not Path(name).exists():
        from .. import demo

        try:
            model, processor = demo.load(name)
        except FileNotFoundError as error:
            raise cli.UserError(str(error)) from None
        if device is not None:
            model = model.to(device)
        return model, processor, f"demo:{name}", demo.model_path(name)
    pipe = cli.load_pipeline(name, device, None)
    folder = Path(name).expanduser()
    return pipe.model, pipe.explainer.processor, name, folder if folder.is_dir() else None


def _weights_digest(folder: Path | None) -> str | None:
    """sha256 of a local model's weights file, so a result names the exact weights it measured."""
    if folder is None or not (folder / "model.safetensors").is_file():
        return None
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _demo_names() -> tuple[str, ...]:
    from .. import demo

    return demo.MODEL_NAMES


def _default_models() -> list[str]:
    from .. import cli, demo

    missing = []
    for name in demo.MODEL_NAMES:
        try:
            demo.model_path(name)
        except FileNotFoundError:
            missing.append(name)
    if missing:
        raise cli.UserError(
            f"the bundled demo models are not installed (missing: {', '.join(missing)}); name a model with --model "
            "ID_OR_DIR"
        )
    return list(demo.MODEL_NAMES)


def _examples(args, model, label: str) -> tuple[Iterable[Example], dict, int | None]:
    """(examples, data description, n for run_benchmark)."""
    if args.dataset is not None:
        return _dataset_examples(args, model)
    if args.manifest is not None:
        return read_manifest(args.manifest), {"source": "manifest", "manifest": str(args.manifest)}, args.n
    scenes = args.n if args.n is not None else DEFAULT_SCENES
    query = "prompt" if LeGradExplainer(model).adapter.is_dual_encoder else "label"
    generated = synthetic.generate(scenes, seed=args.seed, image_size=args.scene_size)
    description = {
        "source": "synthetic",
        "scenes": scenes,
        "seed": args.seed,
        "scene_size": args.scene_size,
        "query": query,
    }
    return examples_from_scenes(generated, query=query, seed=args.seed), description, None


def _dataset_examples(args, model) -> tuple[Iterable[Example], dict, int | None]:
    from .. import datasets_io
    from ..cli import UserError

    query = "prompt" if LeGradExplainer(model).adapter.is_dual_encoder else "label"
    try:
        dataset = datasets_io.read_dataset(args.dataset, args.split)
        examples = datasets_io.examples_from_dataset(
            dataset,
            query_column=args.prompt_column,
            prompt=args.prompt,
            template=args.prompt_template,
            mask_column=args.mask_column,
            image_column=args.image_column,
            image_base=datasets_io.image_base(args.dataset),
            query=query,
        )
    except datasets_io.DatasetError as error:
        raise UserError(str(error)) from error
    description = {
        "source": "dataset",
        "dataset": args.dataset,
        "split": args.split,
        "rows": len(dataset),
        "query": query,
        "query_column": args.prompt_column,
        "prompt": args.prompt,
        "mask_column": args.mask_column,
    }
    return examples, description, args.n


def _check_data_arguments(args) -> None:
    from ..cli import UserError

    if args.dataset is not None and args.manifest is not None:
        raise UserError("give either --manifest or --dataset, not both")
    if args.dataset is None:
        for name in ("split", "image_column", "prompt_column", "prompt"):
            if getattr(args, name) is not None:
                raise UserError(f"--{name.replace('_', '-')} goes with --dataset")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError(
            "legrad benchmark runs in one process (its metrics need every example); run it without accelerate "
            "launch, or split the data yourself with --split"
        )


def _threshold(text: str) -> metrics.Threshold:
    from ..cli import UserError

    if text == "mean":
        return text
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--threshold must be a number or 'mean', got {text!r}") from None


def _run(args, argv: Sequence[str]) -> int:
    from ..cli import UserError

    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise UserError(f"--methods: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
    if args.n is not None and args.n < 1:
        raise UserError("--n must be at least 1")
    if args.figure_examples < 0:
        raise UserError("--figure-examples must be >= 0")
    threshold = _threshold(args.threshold)
    _check_data_arguments(args)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    names = args.model or _default_models()
    if args.manifest is not None and not args.manifest.is_file():
        raise UserError(f"{args.manifest}: no such manifest file")
    runs, figures = [], []
    for name in names:
        model, processor, label, folder = _load_model(name, args.device)
        examples, description, limit = _examples(args, model, label)
        print(f"benchmarking {label} ...", file=sys.stderr)
        try:
            result = run_benchmark(
                model,
                processor,
                examples,
                methods=methods,
                n=limit,
                image_size=args.image_size,
                perturbation=not args.no_perturbation,
                threshold=threshold,
                model_name=label,
                data=description,
                progress=sys.stderr.isatty(),
                per_example=args.per_example,
            )
        except (ManifestError, ValueError, TypeError) as error:
            raise UserError(f"{label}: {error}") from error
        result["weights_sha256"] = _weights_digest(folder)
        runs.append(result)
        print(format_table(result) + "\n")
        if args.figure is not None and args.figure_examples:
            source = examples if isinstance(examples, list) else _examples(args, model, label)[0]
            chosen = _figure_examples(source, args.figure_examples)
            heatmaps = explain_examples(model, processor, chosen, methods, args.image_size)
            figures.append(example_figure(chosen, heatmaps, title=label))
    record = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["legrad", "benchmark", *argv]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": _versions(),
        "runs": runs,
    }
    if len(runs) == 1:  # one model: its table at the top level too, {"methods": {"legrad": {"miou": ...}, ...}}
        record["model"], record["methods"] = runs[0]["model"], runs[0]["methods"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    if figures:
        _stack(figures).save(args.figure, format="PNG")
        print(f"wrote {args.figure}")
    return 0


def _figure_examples(examples: Iterable[Example], count: int) -> list[Example]:
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


def _stack(figures: list[Image.Image]) -> Image.Image:
    width = max(figure.width for figure in figures)
    canvas = Image.new("RGB", (width, sum(figure.height for figure in figures)), (255, 255, 255))
    top = 0
    for figure in figures:
        canvas.paste(figure, (0, top))
        top += figure.height
    return canvas


def _versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {"transformers-legrad": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    """`legrad benchmark ...`: exit 0 on success, 2 with a one-line message for a user error (`--debug`: traceback)."""
    from ..cli import UserError, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    return run_command(lambda: _run(args, argv), args.debug, (UserError, ManifestError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
