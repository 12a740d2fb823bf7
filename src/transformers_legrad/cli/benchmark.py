"""`legrad benchmark`: the localization benchmark (`evaluation.benchmark`) from the command line, results as JSON.

    legrad benchmark --json results.json                        # the bundled demo models on generated scenes
    legrad benchmark --model DIR --manifest data.jsonl --json results.json --figure example.png
    legrad benchmark --model DIR --dataset data.parquet --prompt-column prompt --mask-column mask --json results.json

This module turns the arguments into examples (generated scenes, a manifest, or a data set with masks), models (a
bundled demo model name, a local folder or a Hub id) and `run_benchmark` calls, prints each model's table, and
writes the JSON record (with the command, the machine and the versions) and the example figure.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from ..evaluation import metrics, synthetic
from ..evaluation.baselines import METHODS
from ..evaluation.benchmark import (
    BENCHMARK_SEED,
    DEFAULT_SCENES,
    example_figure,
    explain_examples,
    figure_examples,
    format_table,
    run_benchmark,
)
from ..evaluation.data import Example, ManifestError, examples_from_scenes, read_manifest
from ..explainer import LeGradExplainer
from .common import UserError, add_dataset_arguments, load_pipeline

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    """Add `legrad benchmark` to the subcommands `commands` (its --debug is listed among its own options)."""
    parser = commands.add_parser(
        "benchmark",
        help="localization metrics of LeGrad and baselines (see `legrad benchmark -h`)",
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
    add_dataset_arguments(parser)
    parser.add_argument("--prompt", default=None, help="with --dataset: one prompt (or class) for every row")
    parser.add_argument("--mask-column", default="mask", help="with --dataset: the object-mask column (mask)")
    # a manifest's bad line (ManifestError) and a missing file are the user's to fix, like a UserError
    parser.set_defaults(handler=run, user_errors=(UserError, ManifestError, FileNotFoundError))


def _load_model(name: str, device: str | None):
    """(model, processor, display name, local folder or None) for a demo model name, a local folder or a Hub id."""
    if name in _demo_names() and not Path(name).exists():
        from .. import demo

        try:
            model, processor = demo.load(name)
        except FileNotFoundError as error:
            raise UserError(str(error)) from None
        if device is not None:
            model = model.to(device)
        return model, processor, f"demo:{name}", demo.model_path(name)
    pipe = load_pipeline(name, device, None)
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
    from .. import demo

    missing = []
    for name in demo.MODEL_NAMES:
        try:
            demo.model_path(name)
        except FileNotFoundError:
            missing.append(name)
    if missing:
        raise UserError(
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
    if text == "mean":
        return text
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--threshold must be a number or 'mean', got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """`legrad benchmark ...`: exit 0; a `UserError` (or a `ManifestError`) for what the user can fix."""
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
        if LeGradExplainer(model).adapter.is_backbone:
            raise UserError(
                f"{label} is a backbone (no text tower, no classifier): the localization benchmark scores prompts or "
                "classes against object masks; benchmark a dual encoder or a classifier"
            )
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
            chosen = figure_examples(source, args.figure_examples)
            heatmaps = explain_examples(model, processor, chosen, methods, args.image_size)
            figures.append(example_figure(chosen, heatmaps, title=label))
    record = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["legrad", *args.argv]),
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
