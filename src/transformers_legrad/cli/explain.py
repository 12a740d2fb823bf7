"""`legrad explain`: maps for image files and folders (PNG files), or for a whole data set (sharded Parquet).

    legrad explain IMAGE_OR_DIR... --model ID_OR_DIR --prompt TEXT [--prompt TEXT ...] --out DIR
    legrad explain IMAGE_OR_DIR... --model VIT_ID --top-k 3 --out DIR
    legrad explain IMAGE_OR_DIR... --model DINOV2_ID --reference IMAGE [--reference IMAGE ...] --out DIR
    legrad explain IMAGE_OR_DIR... --model DINOV2_ID --directions FILE.safetensors --out DIR
    legrad explain FRAMES_DIR_OR_GIF... --video --model VIDEOMAE_ID [--top-k 3] --out DIR  (strip PNG + GIF each)
    legrad explain CLIP.wav... --model AST_ID [--top-k 3] --out DIR                     (spectrogram figure each)
    legrad explain --dataset NAME_OR_PATH [--split S] --model ID_OR_DIR --prompt TEXT --out DIR   (sharded Parquet)
    accelerate launch --num_processes N -m transformers_legrad.cli explain --dataset ...        (N processes)

A bad image (video, audio clip) among many is reported by name and skipped; the others are written, and the exit
status is 1 if any input failed. Video and audio are the model's modality (its adapter's `spec.modality`): with a
video model each folder of frames or animated image (GIF) is one clip, `--video` or not (the flag states the
intent, and is refused for other models); audio files are read with soundfile (the `transformers-legrad[audio]`
extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    UserError,
    add_dataset_arguments,
    load_pipeline,
    parse_image_size,
    parse_layers,
    parse_options,
)

__all__ = ["AUDIO_SUFFIXES", "add_parser", "iter_image_paths", "run"]

#: Files taken as audio clips (what soundfile's libsndfile reads).
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus", ".w64", ".caf"}


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    """Add `legrad explain` to the subcommands `commands`; `common` holds the options every subcommand takes."""
    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="explain images with prompts (CLIP/SigLIP), classes, or directions (backbones)",
    )
    explain.add_argument(
        "inputs",
        nargs="*",
        metavar="IMAGE_OR_DIR",
        help="image files or folders of images; audio files or folders (audio models); with --video, clips (folders "
        "of frames, GIFs)",
    )
    explain.add_argument("--model", required=True, help="Hub id or local folder of a supported model")
    explain.add_argument("--prompt", action="append", default=[], help="a text prompt (repeatable)")
    explain.add_argument(
        "--top-k", type=int, help="classifiers: explain the k most probable classes; detectors: keep the k best boxes"
    )
    explain.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detectors (OWL-ViT, OWLv2): explain every box whose score is above this (default 0.1)",
    )
    explain.add_argument("--target", action="append", default=[], help="classifiers: a class name or id (repeatable)")
    explain.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="IMAGE",
        help="backbones: a reference image whose own embedding is the direction (repeatable)",
    )
    explain.add_argument(
        "--directions",
        type=Path,
        default=None,
        metavar="FILE",
        help="backbones: a .safetensors file with a [K, dim] tensor named 'directions' (labels: JSON in its metadata)",
    )
    explain.add_argument("--out", required=True, type=Path, help="output folder")
    explain.add_argument("--layers", default=None, help="'all', N (the last N blocks) or indices like 0,5,-1")
    explain.add_argument("--image-size", default=None, help="explain at this size: N or HxW (e.g. 448)")
    explain.add_argument("--no-correction", action="store_true", help="SigLIP: turn off the null-prompt correction")
    explain.add_argument(
        "--text-relevance",
        action="store_true",
        help='CLIP/SigLIP: also write which words of each prompt match the image ("words" in results.json)',
    )
    explain.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, or 'auto' (device_map='auto')")
    explain.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="model dtype")
    explain.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the model's family, repeatable: use_itm_head=false (BLIP's cosine instead of its matching "
        "head), attention=temporal (TimeSformer)",
    )
    explain.add_argument("--batch-size", type=int, default=8, help="images per explanation (default 8)")
    explain.add_argument(
        "--video",
        action="store_true",
        help="video models (optional: a video model's inputs are always clips): each input is one clip, a folder "
        "of frames (in natural order) or an animated GIF",
    )
    explain.add_argument("--fps", type=float, default=4.0, help="video: frames per second of the GIFs (default 4)")
    explain.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    explain.add_argument("--colormap", default="inferno", help="overlay colormap (default inferno)")
    add_dataset_arguments(explain)
    data = explain.add_argument_group("whole data sets (with --dataset; see README 'Explaining a whole data set')")
    data.add_argument("--id-column", default=None, help="column naming each image (default: its file name or row)")
    data.add_argument("--shard-size", type=int, default=None, help="rows per output Parquet shard (default 256)")
    data.add_argument("--save-png", action="store_true", help="also write heatmap and overlay PNGs")
    explain.set_defaults(handler=run, user_errors=(UserError,))


def iter_image_paths(inputs: Sequence[str]) -> Iterator[Path]:
    """Files as given; folders expanded to their image files, sorted. A missing path is yielded to fail later."""
    from ..images import IMAGE_SUFFIXES

    for name in inputs:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def run(args: argparse.Namespace) -> int:
    """`legrad explain ...`: exit 0, or 1 when some input failed; a `UserError` for what the user can fix."""
    if args.dataset is not None:
        if args.reference or args.directions is not None:
            raise UserError("--reference and --directions explain image files or folders, not a --dataset")
        if args.text_relevance:
            raise UserError("--text-relevance explains image files or folders, not a --dataset")
        if args.inputs:
            raise UserError("give either IMAGE_OR_DIR arguments or --dataset, not both")
        if args.video:
            raise UserError("--video explains clips given as folders of frames or GIF files, not a --dataset")
        return dataset_command(args)
    if not args.inputs:
        raise UserError("give image files or folders to explain, or --dataset NAME_OR_PATH")
    for name in ("split", "image_column", "prompt_column", "id_column", "shard_size"):
        if getattr(args, name) is not None:
            raise UserError(f"--{name.replace('_', '-')} goes with --dataset")
    if args.save_png:
        raise UserError("--save-png goes with --dataset (image folders always get PNGs)")
    if args.text_relevance and not args.prompt:
        raise UserError("--text-relevance explains the words of --prompt texts (CLIP/SigLIP); give --prompt")

    from .. import visualize
    from ..images import ImageReadError, open_image

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError("--alpha must be between 0 and 1")
    layers, image_size = parse_layers(args.layers), parse_image_size(args.image_size)
    pipe = load_pipeline(args.model, args.device, args.dtype, parse_options(args.option))
    modality = pipe.explainer.adapter.spec.modality
    _check_modality(args, modality)
    if modality != "image":
        return _media_command(args, pipe, modality, layers)
    call = {
        "layers": layers,
        "image_size": image_size,
        "alpha": args.alpha,
        "colormap": args.colormap,
        "return_tensors": True,
    }
    adapter = pipe.explainer.adapter
    if adapter.is_backbone:
        call.update(_backbone_call(args, pipe.explainer, image_size))
    elif args.reference or args.directions is not None:
        raise UserError(
            f"--reference and --directions are for backbones (such as Dinov2Model); {args.model} takes "
            + ("--prompt" if adapter.is_dual_encoder else "--top-k or --target")
        )
    elif args.threshold is not None and not adapter.is_detector:
        raise UserError(f"--threshold is for detectors (OWL-ViT, OWLv2); {args.model} is not one")
    elif adapter.is_detector:
        if not args.prompt:
            raise UserError(f"{args.model} is a detector: give at least one --prompt (the objects to find)")
        if args.target:
            raise UserError("--target is for image classifiers; this detector takes --prompt")
        if args.text_relevance or args.no_correction:
            raise UserError(
                "--text-relevance and --no-correction are for CLIP/SigLIP-like models; this detector takes --prompt "
                "with --threshold and --top-k"
            )
        call["candidate_labels"] = args.prompt
        call.update(
            {name: value for name, value in (("threshold", args.threshold), ("top_k", args.top_k)) if value is not None}
        )
    elif adapter.is_dual_encoder:
        if not args.prompt:
            raise UserError(f"{args.model} explains text prompts: give at least one --prompt")
        if args.top_k is not None or args.target:
            raise UserError("--top-k and --target are for image classifiers; this model takes --prompt")
        call["candidate_labels"] = args.prompt
        if args.no_correction:
            call["correction"] = False
        if args.text_relevance:
            call["text_relevance"] = True
    else:
        call.update(_classes_call(args, "image"))

    args.out.mkdir(parents=True, exist_ok=True)
    paths = list(iter_image_paths(args.inputs))
    if not paths:
        raise UserError("no images found in the given inputs")
    records, failures = _explain_in_batches(
        args,
        pipe,
        call,
        paths,
        read=open_image,
        read_errors=(ImageReadError,),
        write=lambda stem, path, image, entries: _write_image_results(
            args.out, stem, path, image, entries, visualize, call
        ),
        unit="image",
    )
    written = len({record["image"] for record in records if record["label"] is not None})
    empty = len({record["image"] for record in records if record["label"] is None})
    print(
        f"wrote maps for {written} image(s) to {args.out}"
        + (f"; {empty} image(s) with no box above the threshold" if empty else "")
        + (f"; {failures} failed" if failures else "")
    )
    return EXIT_INPUT_FAILED if failures else EXIT_OK


def _explain_in_batches(args, pipe, call: dict, paths: list[Path], *, read, read_errors, write, unit: str):
    """Read, explain (`--batch-size` inputs per pipeline call) and write each input; results.json at the end.

    An input that `read` cannot read (one of `read_errors`) is reported and skipped. results.json is written also
    when a batch stops the run (a `UserError`), with the inputs written before it. Returns (records, failures).
    """
    from huggingface_hub.utils import tqdm

    records, failures, used_stems = [], 0, set()
    try:
        with tqdm(total=len(paths), desc="explaining", unit=unit, disable=len(paths) < 2) as progress:
            for start in range(0, len(paths), args.batch_size):
                batch = []
                for path in paths[start : start + args.batch_size]:
                    try:
                        batch.append((path, read(path)))
                    except read_errors as error:
                        print(f"error: {error}", file=sys.stderr)
                        failures += 1
                        progress.update(1)
                if not batch:
                    continue
                try:
                    results = pipe([item for _, item in batch], batch_size=len(batch), **call)
                except (ValueError, TypeError) as error:
                    raise UserError(str(error)) from error
                for (path, item), entries in zip(batch, results, strict=True):
                    records.extend(write(_unique_stem(path, used_stems), path, item, entries))
                    progress.update(1)
    finally:
        (args.out / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    return records, failures


def _classes_call(args: argparse.Namespace, modality: str) -> dict:
    """A classifier's pipeline arguments: `targets` (--target names or ids) or `top_k` (--top-k, default 1)."""
    if args.prompt:
        raise UserError(f"{args.model} is {_an(modality)} classifier: use --top-k N or --target LABEL, not --prompt")
    if args.top_k is not None and args.target:
        raise UserError("give either --top-k or --target, not both")
    if args.target:
        return {"targets": list(args.target)}  # names or ids ("3"): the explainer resolves both
    return {"top_k": args.top_k or 1}


def _check_modality(args: argparse.Namespace, modality: str) -> None:
    """The inputs and options fit the model's modality (an image, video or audio model), or a UserError."""
    name = args.model
    if args.video and modality != "video":
        what = "audio files" if modality == "audio" else "images"
        raise UserError(f"--video is for video classifiers; {name} is {_an(modality)} model: give {what}, not --video")
    audio_files = [n for n in args.inputs if Path(n).suffix.lower() in AUDIO_SUFFIXES]
    if audio_files and modality != "audio":
        raise UserError(f"{audio_files[0]} is an audio file, but {name} is {_an(modality)} model, not an audio one")
    if modality == "audio":
        not_audio = [n for n in args.inputs if Path(n).is_file() and Path(n).suffix.lower() not in AUDIO_SUFFIXES]
        if not_audio:
            kinds = ", ".join(sorted(AUDIO_SUFFIXES))
            raise UserError(
                f"{name} is an audio model: give audio files ({kinds}) or folders of them, not {not_audio[0]}"
            )
    if modality != "image":
        if args.image_size is not None:
            raise UserError(f"--image-size is for image models; {name} takes {modality} at its own input size")
        if args.threshold is not None:
            raise UserError(
                f"--threshold is for detectors (OWL-ViT, OWLv2); {name} is {_an(modality)} classifier: use --top-k N "
                "or --target LABEL"
            )
        if args.reference or args.directions is not None or args.text_relevance or args.no_correction:
            raise UserError(
                f"--reference, --directions, --text-relevance and --no-correction are for image models; {name} is "
                f"{_an(modality)} classifier: use --top-k N or --target LABEL"
            )
    if modality == "video" and not 0 < args.fps <= 50:
        raise UserError("--fps must be above 0 and at most 50")


def _an(modality: str) -> str:
    """ "an image", "a video", "an audio"."""
    return f"{'an' if modality[0] in 'aeiou' else 'a'} {modality}"


def _media_command(args: argparse.Namespace, pipe, modality: str, layers) -> int:
    """Video clips (a strip PNG and a GIF per clip and class) or audio clips (a spectrogram figure per clip and
    class), with results.json; an unreadable clip is reported and skipped (exit status 1)."""

    call = {"layers": layers, "alpha": args.alpha, "colormap": args.colormap, **_classes_call(args, modality)}
    paths = list(_iter_clip_paths(args.inputs, modality))
    if not paths:
        raise UserError(f"no {'audio files' if modality == 'audio' else 'clips'} found in the given inputs")
    args.out.mkdir(parents=True, exist_ok=True)
    read, write = (_read_video, _write_video_results) if modality == "video" else (_read_audio, _write_audio_results)
    records, failures = _explain_in_batches(
        args,
        pipe,
        call,
        paths,
        read=lambda path: read(path, pipe),
        read_errors=(ValueError, OSError),  # media's VideoReadError / AudioReadError, unreadable frames
        write=lambda stem, path, clip, entries: write(args, stem, path, entries),
        unit="clip",
    )
    written = len({record[modality] for record in records})
    print(f"wrote maps for {written} {modality} clip(s) to {args.out}" + (f"; {failures} failed" if failures else ""))
    return EXIT_INPUT_FAILED if failures else EXIT_OK


def _iter_clip_paths(inputs: Sequence[str], modality: str) -> Iterator[Path]:
    """Video: each input is one clip. Audio: files as given, folders expanded to their audio files, sorted."""
    for name in inputs:
        path = Path(name)
        if modality == "audio" and path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path


def _read_video(path: Path, pipe) -> list:
    """A clip's frames (`media.load_video`: a folder of frames or an animated image), at least the model's
    `config.num_frames` of them (the pipeline samples that many); a `VideoReadError` otherwise."""
    from ..media import VideoReadError, load_video

    frames = load_video(path)
    needed = int(pipe.model.config.num_frames)
    if len(frames) < needed:
        raise VideoReadError(
            f"{path}: {len(frames)} frame(s), but {type(pipe.model).__name__} takes {needed} per clip "
            "(`config.num_frames`); give a clip with at least that many frames"
        )
    return frames


def _read_audio(path: Path, pipe) -> dict:
    """A clip's waveform at the feature extractor's rate, as the pipeline's `{"raw", "sampling_rate"}`."""
    from ..media import load_audio

    try:
        waveform, rate = load_audio(path, target_rate=int(pipe.feature_extractor.sampling_rate))
    except ImportError as error:  # soundfile missing: the message names the extra to install
        raise UserError(str(error)) from error
    return {"raw": waveform, "sampling_rate": rate}


def _write_video_results(args: argparse.Namespace, stem: str, path: Path, entries) -> list[dict]:
    from .. import visualize
    from ..visualize_media import save_gif

    records = []
    for rank, entry in enumerate(entries):
        name = f"{stem}_{rank:02d}_{visualize.slug(entry['label'])}"
        entry["strip"].save(args.out / f"{name}_strip.png")
        save_gif(args.out / f"{name}.gif", entry["frames"], fps=args.fps)
        records.append(
            {
                "video": str(path),
                "label": entry["label"],
                "score": entry["score"],
                "strip": f"{name}_strip.png",
                "gif": f"{name}.gif",
            }
        )
    return records


def _write_audio_results(args: argparse.Namespace, stem: str, path: Path, entries) -> list[dict]:
    from .. import visualize

    records = []
    for rank, entry in enumerate(entries):
        name = f"{stem}_{rank:02d}_{visualize.slug(entry['label'])}"
        entry["overlay"].save(args.out / f"{name}_spectrogram.png")
        records.append(
            {
                "audio": str(path),
                "label": entry["label"],
                "score": entry["score"],
                "figure": f"{name}_spectrogram.png",
                "times": entry["times"],
                "relevance_over_time": entry["relevance_over_time"],
            }
        )
    return records


def _backbone_call(args: argparse.Namespace, explainer, image_size) -> dict:
    """A backbone's pipeline arguments: `directions` (from --directions, or --reference images' embeddings, once
    for all batches) and their `labels` (the file's, or the references' file names)."""
    from ..images import ImageReadError, open_image

    if args.prompt or args.top_k is not None or args.target:
        raise UserError(
            f"{args.model} is a backbone (no text tower, no classifier): use --reference IMAGE or --directions FILE, "
            "not --prompt, --top-k or --target"
        )
    if bool(args.reference) == (args.directions is not None):
        raise UserError(
            f"{args.model} is a backbone: give --reference IMAGE (repeatable) or --directions FILE.safetensors"
            + (", not both" if args.reference else "")
        )
    if args.directions is not None:
        directions, labels = read_directions(args.directions)
        return {"directions": directions, **({"labels": labels} if labels is not None else {})}
    try:
        references = [open_image(Path(name)) for name in args.reference]
    except ImageReadError as error:
        raise UserError(f"--reference: {error}") from error
    try:
        directions = explainer.reference_directions(references, image_size)
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from error
    return {"directions": directions, "labels": [Path(name).stem for name in args.reference]}


def read_directions(path: Path):
    """The [K, dim] tensor named `directions` of a safetensors file, and the `labels` of its metadata (a JSON list
    of K strings) or None; a UserError naming the problem otherwise."""
    from safetensors import SafetensorError, safe_open

    save = "save it with `safetensors.torch.save_file({'directions': T}, path, metadata={'labels': json.dumps(names)})`"
    try:
        with safe_open(str(path), framework="pt") as file:
            names, metadata = list(file.keys()), file.metadata() or {}
            if "directions" not in names:
                raise UserError(
                    f"--directions {path}: no tensor named 'directions' (it holds: {', '.join(names) or 'nothing'}); "
                    + save
                )
            directions = file.get_tensor("directions")
    except (OSError, SafetensorError) as error:
        raise UserError(f"--directions {path}: not a readable safetensors file ({error}); {save}") from error
    if "labels" not in metadata:
        return directions, None
    try:
        labels = json.loads(metadata["labels"])
    except json.JSONDecodeError as error:
        raise UserError(f"--directions {path}: its 'labels' metadata is not JSON ({error}); {save}") from error
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise UserError(f"--directions {path}: its 'labels' metadata must be a JSON list of strings; {save}")
    return directions, labels


def dataset_command(args: argparse.Namespace) -> int:
    """`legrad explain --dataset ...`: sharded Parquet results, split across accelerate's processes."""
    from .. import datasets_io

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError("--alpha must be between 0 and 1")
    layers, image_size = parse_layers(args.layers), parse_image_size(args.image_size)
    state = process_state(args.device)
    if state.num_processes > 1 and args.device not in (None, "cpu"):
        raise UserError(
            f"--device {args.device}: under accelerate launch each process takes its own device; leave --device out"
        )
    device = args.device if args.device is not None and state.num_processes == 1 else str(state.device)
    try:
        dataset = datasets_io.read_dataset(args.dataset, args.split)
        pipe = load_pipeline(args.model, device, args.dtype, parse_options(args.option))
        modality = pipe.explainer.adapter.spec.modality
        if modality != "image":
            raise UserError(
                f"--dataset explains images; {args.model} is {_an(modality)} model: give its clips as files or "
                "folders (legrad explain CLIP... --model ...)"
            )
        if pipe.explainer.adapter.is_backbone:
            raise UserError(
                f"{args.model} is a backbone (explained along --reference or --directions): explain image files or "
                "folders with it; --dataset takes prompts or classes"
            )
        query = datasets_io.DatasetQuery(
            prompts=list(args.prompt),
            column=args.prompt_column,
            template=args.prompt_template,
            top_k=args.top_k,
            targets=list(args.target),
        )
        settings = {
            "model": _resolved(args.model),
            "dtype": args.dtype,
            "dataset": _resolved(args.dataset),
            "split": args.split,
            "image_column": args.image_column,
            "id_column": args.id_column,
            "query": query.describe(),
            "layers": layers,
            "image_size": image_size,
            "correction": not args.no_correction,
            "save_png": args.save_png,
        }
        summary = datasets_io.explain_dataset(
            pipe.explainer,
            dataset,
            args.out,
            query,
            settings=settings,
            image_column=args.image_column,
            id_column=args.id_column,
            image_base=datasets_io.image_base(args.dataset),
            layers=layers,
            image_size=image_size,
            correction=False if args.no_correction else None,
            batch_size=args.batch_size,
            shard_size=args.shard_size or datasets_io.DEFAULT_SHARD_SIZE,
            save_png=args.save_png,
            alpha=args.alpha,
            colormap=args.colormap,
            process_index=state.process_index,
            num_processes=state.num_processes,
            progress=state.is_local_main_process and sys.stderr.isatty(),
        )
    except datasets_io.DatasetError as error:
        raise UserError(str(error)) from error
    rate = summary["images"] / summary["seconds"] if summary["seconds"] > 0 and summary["images"] else 0.0
    who = f"process {state.process_index}/{state.num_processes}: " if state.num_processes > 1 else ""
    print(
        f"{who}wrote {len(summary['written'])} shard(s) ({summary['images']} images, {rate:.2f} images/s), skipped "
        f"{len(summary['skipped'])} complete shard(s) of {summary['shards']} in {args.out}"
        + (f"; {len(summary['failed'])} image(s) failed" if summary["failed"] else "")
    )
    return EXIT_INPUT_FAILED if summary["failed"] else EXIT_OK


def _resolved(name: str) -> str:
    """A local path as an absolute path (a rerun from another folder resumes the same run); a Hub id as it is."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def process_state(device: str | None):
    """accelerate's `PartialState`: this process's index, the number of processes, and its device.

    Without accelerate launch (or torchrun) it is one process. On a machine without an accelerator, processes
    started by a launcher join a CPU (gloo) process group.
    """
    import os

    import torch
    from accelerate import PartialState

    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1 or int(os.environ.get("WORLD_SIZE", 1)) > 1
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    asked_for_cpu = device == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=asked_for_cpu or (launched and not has_accelerator))


def _unique_stem(path: Path, used: set[str]) -> str:
    from .. import visualize

    stem, index = visualize.slug(path.stem, 60), 1
    candidate = stem
    while candidate in used:
        index += 1
        candidate = f"{stem}-{index}"
    used.add(candidate)
    return candidate


def _write_image_results(out: Path, stem: str, path: Path, image, entries, visualize, call) -> list[dict]:
    records = []
    for rank, entry in enumerate(entries):
        name = f"{stem}_{rank:02d}_{visualize.slug(entry['label'])}"
        entry["overlay"].save(out / f"{name}_overlay.png")
        entry["heatmap"].save(out / f"{name}_heatmap.png")
        records.append(
            {
                "image": str(path),
                "label": entry["label"],
                "score": entry["score"],
                "overlay": f"{name}_overlay.png",
                "heatmap": f"{name}_heatmap.png",
                "grid": f"{stem}_grid.png",
                **({"words": entry["words"]} if "words" in entry else {}),
                **({"box": entry["box"]} if "box" in entry else {}),
            }
        )
    if not entries:  # a detector found nothing above its threshold: the image is recorded, without maps
        return [{"image": str(path), "label": None, "score": None, "box": None}]
    visualize.save_grid(
        out / f"{stem}_grid.png",
        image,
        [entry["map"] for entry in entries],
        [entry["label"] for entry in entries],
        scores=[entry["score"] for entry in entries],
        alpha=call["alpha"],
        colormap=call["colormap"],
        **_grid_words(entries),
    )
    return records


def _grid_words(entries) -> dict:
    """`save_grid`'s `words=` (each prompt's words shaded under its map) when the entries carry word relevances."""
    if not entries or "words" not in entries[0]:
        return {}
    return {"words": [[(item["word"], item["relevance"]) for item in entry["words"]] for entry in entries]}
