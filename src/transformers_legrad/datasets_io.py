"""Explaining whole data sets: Hugging Face `datasets` in, sharded Parquet out, split across processes.

    legrad explain --dataset DIR_FILE_OR_HUB_NAME --model ID_OR_DIR --prompt "a cat" --out results/
    accelerate launch --num_processes 8 -m transformers_legrad.cli explain --dataset ... --out results/

A data set is read with `datasets` (`read_dataset`): a local folder (a folder of images, with an optional
`metadata.jsonl`/`metadata.csv`, loads as an `imagefolder`; a folder of parquet/JSONL/CSV files by their type; a
folder written by `save_to_disk`), a parquet/JSONL/JSON/CSV/arrow file, or a Hub name (when online). What to
explain in each row is either the same `prompts` (or `top_k` / `targets` for classifiers) for every row, or a
column (`query_column`): a prompt or a list of prompts per row (a `ClassLabel` column gives its class names), or
a class name/id per row for classifiers.

Rows are cut into shards of `shard_size` rows in data-set order: shard i is rows [i * shard_size, (i + 1) *
shard_size). The shards are defined by the data set alone, so the files written do not depend on how many
processes write them. Process p of n (accelerate's `PartialState`, or any `process_index`/`num_processes`) takes
the shards i with i % n == p, each in batches of `batch_size` images that share their prompts, and writes
`shard-IIIII-of-NNNNN.parquet` to a temporary name first and renames it when complete. A rerun with the same
settings skips complete shards (resume); `run.json` records the settings and refuses an output folder that holds
another run's shards. The union of the shards is the same whatever the number of processes (same rows, same maps).

One output row per (image, prompt or class), in data-set order, then prompt order (`RESULT_SCHEMA`):
`image_id`, `row`, `query_index`, `label`, `class_id` (classifiers), `score` (the probability as the family's
pipeline reports it), `logit` (`LeGradOutput.scores`), `grid_map` (the raw patch grid map, flattened, float32),
`grid_shape` ([h, w]) and, with `save_png`, `heatmap_png` / `overlay_png` (paths relative to the output folder).
Read it back with `read_results(out)` or `datasets.load_dataset("parquet", data_files=f"{out}/shard-*.parquet")`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "DatasetError",
    "DatasetQuery",
    "RESULT_SCHEMA",
    "explain_dataset",
    "image_base",
    "examples_from_dataset",
    "process_shards",
    "read_dataset",
    "read_results",
    "save_scenes",
    "shard_file_name",
]

#: Rows per output shard unless `shard_size` says otherwise.
DEFAULT_SHARD_SIZE = 256
RUN_FILE = "run.json"
_SHARD_PATTERN = "shard-*.parquet"
_METADATA_KEY = b"transformers_legrad"
_INSTALL_HINT = 'install the data-set extra: pip install "transformers-legrad[datasets]"'


class DatasetError(ValueError):
    """A data set, column or output folder that cannot be used; the message names it and the fix."""


def _require_datasets():
    try:
        import datasets
        import pyarrow  # noqa: F401
    except ImportError:
        raise DatasetError(f"reading data sets needs the `datasets` and `pyarrow` packages: {_INSTALL_HINT}") from None
    return datasets


def _result_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("image_id", pa.string()),
            ("row", pa.int64()),
            ("query_index", pa.int32()),
            ("label", pa.string()),
            ("class_id", pa.int64()),
            ("score", pa.float32()),
            ("logit", pa.float32()),
            ("grid_map", pa.list_(pa.float32())),
            ("grid_shape", pa.list_(pa.int32())),
            ("heatmap_png", pa.string()),
            ("overlay_png", pa.string()),
        ]
    )


#: The output columns, in order (a pyarrow schema is built from it where pyarrow is installed).
RESULT_SCHEMA: tuple[str, ...] = (
    "image_id",
    "row",
    "query_index",
    "label",
    "class_id",
    "score",
    "logit",
    "grid_map",
    "grid_shape",
    "heatmap_png",
    "overlay_png",
)


# --- reading -----------------------------------------------------------------------------------------------------
_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}


def read_dataset(source: str | os.PathLike, split: str | None = None):
    """One split of a data set as a `datasets.Dataset`.

    Args:
        source: a local folder (images, with an optional metadata.jsonl: an imagefolder; parquet/JSONL/CSV files;
            or a `save_to_disk` folder), a parquet/JSONL/JSON/CSV/arrow file, or a Hub name.
        split: the split to use; None: the only split there is.

    Raises:
        DatasetError: nothing found at `source`, an unknown split, or a data set with several splits and no
            `split`.
    """
    datasets = _require_datasets()
    name = str(source)
    path = Path(name).expanduser()
    try:
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise DatasetError(
                    f"{name}: unknown data file type {path.suffix!r}; give a folder or a "
                    f"{'/'.join(sorted(_FILE_BUILDERS))} file"
                )
            loaded = datasets.load_dataset(builder, data_files=str(path))
        elif path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_dir():
            loaded = datasets.load_dataset(str(path))
        elif name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
            raise DatasetError(f"{name}: no such data set file or folder")
        else:
            loaded = datasets.load_dataset(name, split=split)
    except DatasetError:
        raise
    except (FileNotFoundError, ValueError, OSError) as error:
        raise DatasetError(f"cannot read the data set {name!r}: {str(error).splitlines()[0]}") from error
    if isinstance(loaded, datasets.Dataset):
        return loaded
    splits = list(loaded)
    if split is None:
        if len(splits) != 1:
            raise DatasetError(f"{name} has the splits {', '.join(splits)}: choose one with --split")
        split = splits[0]
    if split not in loaded:
        raise DatasetError(f"{name} has no split {split!r}; its splits: {', '.join(splits)}")
    return loaded[split]


def _image_column(dataset, image_column: str | None) -> str:
    import datasets

    columns = list(dataset.column_names)
    if image_column is not None:
        if image_column not in columns:
            raise DatasetError(f"no column {image_column!r} in the data set; its columns: {', '.join(columns)}")
        return image_column
    images = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    if images:
        return images[0]
    if "image" in columns:
        return "image"
    raise DatasetError(f"no image column found among {', '.join(columns)}: name it with --image-column")


def image_base(source: str | os.PathLike) -> Path:
    """Where relative image paths in a data file are resolved: the file's folder, or the folder itself."""
    path = Path(source).expanduser()
    return path.parent if path.is_file() else path


def _decode_image(value, base: Path, where: str):
    """A cell of the image column (decode=False: {"bytes", "path"}, a path string, an array) as upright RGB."""
    from PIL import Image

    from . import images

    try:
        if isinstance(value, dict) and value.get("bytes") is not None:
            with Image.open(io.BytesIO(value["bytes"])) as picture:
                picture.load()
                return images.load(picture)
        if isinstance(value, dict) and value.get("path"):
            value = value["path"]
        if isinstance(value, str):
            path = Path(value).expanduser()
            return images.open_image(path if path.is_absolute() else base / path)
        if isinstance(value, Image.Image):
            return images.load(value)
        if value is not None:
            return images.to_rgb(np.asarray(value))
    except (OSError, ValueError, TypeError) as error:
        raise images.ImageReadError(f"{where}: {error}") from None
    raise images.ImageReadError(f"{where}: no image in this row")


def _image_name(value, base: Path) -> str | None:
    """The file an image cell came from, if it says: relative to the data set's folder, else its name."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    if not path:
        return None
    file = Path(path).expanduser()
    file = file if file.is_absolute() else base / file  # relative cells are relative to the data set, not to "."
    try:
        return file.resolve().relative_to(base.resolve()).as_posix()
    except (ValueError, OSError):
        return file.name


@dataclass
class DatasetQuery:
    """What to explain in each row: the same prompts/classes for all rows, or a column of them.

    Attributes:
        prompts: dual encoders: prompts for every row.
        column: a column holding a prompt or list of prompts per row (dual encoders), or a class name or id per
            row (classifiers). A `ClassLabel` column gives its class names.
        template: how a column value becomes a prompt, e.g. "a photo of a {}" (dual encoders).
        top_k, targets: classifiers: the k most probable classes (default 1), or these classes for every row.
    """

    prompts: list[str] = field(default_factory=list)
    column: str | None = None
    template: str = "{}"
    top_k: int | None = None
    targets: list[str | int] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self.template.format("label")
        except (KeyError, IndexError, ValueError) as error:
            raise DatasetError(
                f"--prompt-template {self.template!r} cannot take a label ({type(error).__name__}: {error}); use one "
                'empty placeholder, e.g. "a photo of a {}"'
            ) from None

    def describe(self) -> dict:
        return {
            "prompts": list(self.prompts),
            "column": self.column,
            "template": self.template,
            "top_k": self.top_k,
            "targets": list(self.targets),
        }


def _row_queries(dataset, query: DatasetQuery, is_dual_encoder: bool, rows: range) -> list[tuple]:
    """For each row of `rows`, the tuple of prompts (dual encoders) or targets (classifiers) to explain.

    An empty tuple for a classifier without targets means: the top-k predicted classes.
    """
    if query.column is None:
        fixed = tuple(query.prompts) if is_dual_encoder else tuple(query.targets)
        return [fixed] * len(rows)
    import datasets

    feature = dataset.features.get(query.column)
    values = dataset.select_columns([query.column])[rows.start : rows.stop][query.column]
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    result = []
    for row, value in zip(rows, values, strict=True):
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items or any(item is None or item == "" for item in items):
            raise DatasetError(f"row {row}: the column {query.column!r} is empty; every row needs what to explain")
        if names is not None:
            missing = [item for item in items if not 0 <= int(item) < len(names)]
            if missing:  # -1 is `datasets`' "no label" (unlabelled splits); never wrap it to the last class
                raise DatasetError(
                    f"row {row}: the ClassLabel column {query.column!r} has no label ({missing[0]}) here; explain "
                    "a labelled split, or give the prompts with --prompt"
                )
            items = [names[int(item)] for item in items]
        if is_dual_encoder:
            if not all(isinstance(item, str) for item in items):
                raise DatasetError(
                    f"row {row}: the column {query.column!r} holds {items[0]!r}; prompts must be text (or a "
                    "ClassLabel column)"
                )
            result.append(tuple(query.template.format(item) for item in items))
        else:
            result.append(tuple(items))
    return result


# --- shards ------------------------------------------------------------------------------------------------------
def shard_file_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.parquet"


def shard_rows(num_rows: int, shard_size: int) -> list[range]:
    """The rows of each shard: consecutive blocks of `shard_size` rows (the last may be shorter)."""
    return [range(start, min(start + shard_size, num_rows)) for start in range(0, num_rows, shard_size)]


def process_shards(num_shards: int, process_index: int, num_processes: int) -> list[int]:
    """The shards process `process_index` of `num_processes` writes: i with i % num_processes == process_index."""
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"process {process_index} of {num_processes}: the index must be in [0, {num_processes})")
    return list(range(process_index, num_shards, num_processes))


def _shard_fingerprint(path: Path) -> str | None:
    """The run fingerprint stored in a complete shard file, or None when it cannot be read."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata[_METADATA_KEY])["run"]
    except (OSError, KeyError, ValueError):
        return None


def _write_atomically(path: Path, write) -> None:
    """`write(temporary_path)`, then rename onto `path`: readers never see a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _claim_run(out: Path, settings: dict) -> str:
    """Write (or check) `run.json`; the fingerprint that every shard file of this run carries."""
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    record = {"fingerprint": fingerprint, "settings": settings}
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            existing = json.loads(run_file.read_text())
        except ValueError:
            existing = {}
        if existing.get("fingerprint") != fingerprint and any(out.glob(_SHARD_PATTERN)):
            old = existing.get("settings", {})
            differing = sorted(key for key in set(old) | set(settings) if old.get(key) != settings.get(key))
            raise DatasetError(
                f"{out} holds results of another run (different {', '.join(differing) or 'run.json'}); give a new "
                f"--out, or delete {out} to start over"
            )
        if existing.get("fingerprint") == fingerprint:
            return fingerprint
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    _write_atomically(run_file, lambda temporary: temporary.write_text(text))
    return fingerprint


# --- explaining --------------------------------------------------------------------------------------------------
def explain_dataset(
    explainer,
    dataset,
    out: str | os.PathLike,
    query: DatasetQuery,
    *,
    settings: dict,
    image_column: str | None = None,
    id_column: str | None = None,
    image_base: str | os.PathLike = ".",
    layers=None,
    image_size=None,
    correction: bool | None = None,
    batch_size: int = 8,
    shard_size: int = DEFAULT_SHARD_SIZE,
    save_png: bool = False,
    alpha: float = 0.5,
    colormap: str = "inferno",
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = False,
) -> dict:
    """Explain every row of `dataset` and write this process's shards of the results to `out`.

    Args:
        explainer: a `LeGradExplainer` (with its processor) on this process's device.
        dataset: a `datasets.Dataset` (see `read_dataset`).
        out: the output folder (created).
        query: what to explain in each row.
        settings: what defines the run (model, data set, options): stored in `run.json`; a rerun with other
            settings into the same folder is refused, one with the same settings resumes.
        image_column: the image column (default: the first `Image` column, else "image").
        id_column: a column naming each image (default: the image's file name where the data set keeps it, else
            the row number).
        image_base: the folder relative image paths in the data set are resolved against.
        layers, image_size, correction: as in `LeGradExplainer.explain`.
        batch_size: images per `explain` call (one trunk forward), within a shard.
        shard_size: rows per output shard.
        save_png: also write a heatmap and an overlay PNG per (image, prompt) under `out/png/`.
        alpha, colormap: how the overlays are drawn.
        process_index, num_processes: which shards this process writes.
        progress: show a progress bar.

    Returns:
        {"shards": total, "written": [indices], "skipped": [indices already complete], "images": images explained,
        "failed": [(row, message)] for rows whose image could not be read, "seconds": wall time}.
    """
    import datasets
    from huggingface_hub.utils import tqdm

    if batch_size < 1 or shard_size < 1:
        raise DatasetError("--batch-size and --shard-size must be at least 1")
    if len(dataset) == 0:
        raise DatasetError("the data set has no rows")
    is_dual = explainer.adapter.is_dual_encoder
    _check_query(query, is_dual, dataset)
    image_column = _image_column(dataset, image_column)
    if id_column is not None and id_column not in dataset.column_names:
        raise DatasetError(f"no column {id_column!r} in the data set; its columns: {', '.join(dataset.column_names)}")
    if isinstance(dataset.features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "num_rows": len(dataset), "shard_size": shard_size, "batch_size": batch_size}
    fingerprint = _claim_run(out, settings)
    shards = shard_rows(len(dataset), shard_size)
    mine = process_shards(len(shards), process_index, num_processes)
    writer = _ShardWriter(explainer, out, fingerprint, len(shards), save_png, alpha, colormap)
    call = {"layers": layers, "image_size": image_size}
    if is_dual and correction is not None:
        call["correction"] = correction
    summary = {"shards": len(shards), "written": [], "skipped": [], "images": 0, "failed": []}
    base = Path(image_base)
    start = time.perf_counter()
    pending = [index for index in mine if _shard_fingerprint(out / shard_file_name(index, len(shards))) != fingerprint]
    summary["skipped"] = [index for index in mine if index not in pending]
    total = sum(len(shards[index]) for index in pending)
    with tqdm(total=total, desc=f"explaining [{process_index}]", unit="image", disable=not progress) as bar:
        for index in pending:
            for stale in out.glob(f".{shard_file_name(index, len(shards))}.tmp-*"):  # left by an interrupted run
                stale.unlink(missing_ok=True)
            rows = shards[index]
            queries = _row_queries(dataset, query, is_dual, rows)
            chunk = dataset[rows.start : rows.stop]
            records, failed = [], []
            for batch in _batches(rows, queries, batch_size):
                pictures, kept = [], []
                for row in batch:
                    cell = chunk[image_column][row - rows.start]
                    try:
                        pictures.append(_decode_image(cell, base, f"row {row}"))
                        kept.append(row)
                    except ValueError as error:
                        print(f"error: {error}", file=sys.stderr)
                        failed.append((row, str(error)))
                if kept:
                    ids = [_row_id(chunk, row - rows.start, row, image_column, id_column, base) for row in kept]
                    arguments = _explain_arguments(queries[kept[0] - rows.start], is_dual, query)
                    try:
                        output = explainer.explain(images=pictures, **arguments, **call).to("cpu")
                    except (ValueError, TypeError) as error:
                        raise DatasetError(f"rows {kept[0]}..{kept[-1]}: {error}") from error
                    records.extend(writer.records(output, kept, ids, pictures, image_size))
                bar.update(len(batch))
            writer.write(index, records, failed)
            summary["written"].append(index)
            summary["images"] += len(rows) - len(failed)
            summary["failed"].extend(failed)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _check_query(query: DatasetQuery, is_dual: bool, dataset) -> None:
    if query.column is not None and query.column not in dataset.column_names:
        raise DatasetError(
            f"no column {query.column!r} in the data set; its columns: {', '.join(dataset.column_names)}"
        )
    if query.column is not None and (query.prompts or query.targets or query.top_k is not None):
        raise DatasetError("give either --prompt-column or fixed --prompt/--target/--top-k, not both")
    if is_dual:
        if query.top_k is not None or query.targets:
            raise DatasetError("--top-k and --target are for image classifiers; this model takes prompts")
        if query.column is None and not query.prompts:
            raise DatasetError("this model explains text prompts: give --prompt TEXT (repeatable) or --prompt-column")
    else:
        if query.prompts:
            raise DatasetError("this model is an image classifier: use --top-k, --target or --prompt-column")
        if query.top_k is not None and query.targets:
            raise DatasetError("give either --top-k or --target, not both")


def _batches(rows: range, queries: list[tuple], batch_size: int) -> Iterator[list[int]]:
    """Rows grouped by their prompts (first appearance first), `batch_size` at a time: one `explain` call each."""
    groups: dict[tuple, list[int]] = {}
    for row, prompts in zip(rows, queries, strict=True):
        groups.setdefault(prompts, []).append(row)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            yield members[start : start + batch_size]


def _explain_arguments(queries: tuple, is_dual: bool, query: DatasetQuery) -> dict:
    if is_dual:
        return {"text": list(queries)}
    if queries:
        return {"targets": list(queries)}  # names, ids, or ids as text: the explainer resolves them
    return {"top_k": query.top_k or 1}


def _row_id(chunk: dict, offset: int, row: int, image_column: str, id_column: str | None, base: Path) -> str:
    if id_column is not None:
        return str(chunk[id_column][offset])
    return _image_name(chunk[image_column][offset], base) or str(row)


class _ShardWriter:
    """Turns explanations into result rows and writes a shard's rows as one Parquet file."""

    def __init__(self, explainer, out: Path, fingerprint: str, num_shards: int, save_png, alpha, colormap):
        self.explainer, self.out, self.fingerprint, self.num_shards = explainer, out, fingerprint, num_shards
        self.save_png, self.alpha, self.colormap = save_png, alpha, colormap

    def records(self, output, rows: list[int], ids: list[str], pictures, image_size) -> list[dict]:
        records = []
        for b, (row, image_id) in enumerate(zip(rows, ids, strict=True)):
            labels = output.labels if isinstance(output.labels[0], str) else output.labels[b]
            height, width = output.grid_shapes[b]
            for k, label in enumerate(labels):
                grid = output.grid_maps[b, k, :height, :width].contiguous()
                record = {
                    "image_id": image_id,
                    "row": row,
                    "query_index": k,
                    "label": label,
                    "class_id": None if output.target_ids is None else int(output.target_ids[b, k]),
                    "score": float(output.probabilities[b, k]),
                    "logit": float(output.scores[b, k]),
                    "grid_map": grid.flatten().numpy(),
                    "grid_shape": [height, width],
                    "heatmap_png": None,
                    "overlay_png": None,
                }
                if self.save_png:
                    record.update(self._pngs(output, b, k, row, label, pictures[b], image_size))
                records.append(record)
        return records

    def _pngs(self, output, b: int, k: int, row: int, label: str, picture, image_size) -> dict:
        from . import geometry, visualize

        processor = self.explainer.image_processor
        size_kwargs = self.explainer.image_processor_kwargs(image_size)
        region = geometry.processed_region(
            processor, picture.width, picture.height, size_kwargs.get("size"), size_kwargs.get("crop_size")
        )
        processed_height, processed_width = output.image_sizes[b]
        heatmap = output.heatmaps[b, k, :processed_height, :processed_width]
        full = geometry.heatmap_on_original(heatmap, region, picture.width, picture.height)
        folder = self.out / "png" / f"{row // 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{row:08d}_{k:02d}_{visualize.slug(label)}"
        visualize.heatmap_image(full).save(folder / f"{stem}_heatmap.png")
        visualize.overlay(picture, full, alpha=self.alpha, colormap=self.colormap).save(folder / f"{stem}_overlay.png")
        relative = folder.relative_to(self.out).as_posix()
        return {"heatmap_png": f"{relative}/{stem}_heatmap.png", "overlay_png": f"{relative}/{stem}_overlay.png"}

    def write(self, index: int, records: list[dict], failed: list[tuple[int, str]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records.sort(key=lambda record: (record["row"], record["query_index"]))
        schema = _result_schema()
        metadata = {"run": self.fingerprint, "shard": index, "failed": [list(item) for item in failed]}
        schema = schema.with_metadata({_METADATA_KEY: json.dumps(metadata).encode()})
        columns = {name: [record[name] for record in records] for name in schema.names}
        table = pa.Table.from_pydict(columns, schema=schema)
        path = self.out / shard_file_name(index, self.num_shards)
        _write_atomically(path, lambda temporary: pq.write_table(table, temporary))


def read_results(out: str | os.PathLike):
    """The results in `out` as one `datasets.Dataset`, shard by shard (rows in data-set order).

    Raises:
        DatasetError: `out` holds no shard, or some shards of the run are missing (an unfinished run).
    """
    datasets = _require_datasets()
    out = Path(out)
    files = sorted(out.glob(_SHARD_PATTERN))
    if not files:
        raise DatasetError(f"{out}: no result shards ({_SHARD_PATTERN})")
    expected = int(re.fullmatch(r"shard-\d+-of-(\d+)\.parquet", files[0].name).group(1))
    if len(files) != expected:
        raise DatasetError(f"{out}: {len(files)} of {expected} shards present; rerun the command to finish the run")
    return datasets.load_dataset("parquet", data_files=[str(file) for file in files], split="train")


# --- benchmark examples ------------------------------------------------------------------------------------------
def examples_from_dataset(
    dataset,
    *,
    query_column: str | None = None,
    prompt: str | None = None,
    template: str = "{}",
    mask_column: str = "mask",
    image_column: str | None = None,
    image_base: str | os.PathLike = ".",
    query: str = "prompt",
) -> Iterator:
    """`evaluation.data.Example`s of a data set with an object mask per row, for `legrad benchmark --dataset`.

    Args:
        dataset: a `datasets.Dataset` (see `read_dataset`).
        query_column: the column with each row's prompt (dual encoders) or class name/id (classifiers).
        prompt: instead, one prompt (or class) for every row.
        template: how a column value becomes a prompt.
        mask_column: the column with each row's mask: an image (nonzero = object) or a [height, width] array.
        image_column: the image column (default: the first `Image` column, else "image").
        image_base: the folder relative image paths are resolved against.
        query: "prompt" (dual encoders) or "label" (classifiers).
    """
    import datasets

    from .evaluation.data import Example

    if (query_column is None) == (prompt is None):
        raise DatasetError("give exactly one of --prompt-column or --prompt")
    image_column = _image_column(dataset, image_column)
    if mask_column not in dataset.column_names:
        raise DatasetError(
            f"no mask column {mask_column!r} in the data set (columns: {', '.join(dataset.column_names)}); "
            "the benchmark needs an object mask per row: name it with --mask-column"
        )
    given = [prompt] if prompt is not None else []
    fixed = DatasetQuery(
        column=query_column,
        template=template,
        prompts=given if query == "prompt" else [],
        targets=given if query == "label" else [],
    )
    for name in (image_column, mask_column):
        if isinstance(dataset.features.get(name), datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    base = Path(image_base)
    for row in range(len(dataset)):
        record = dataset[row]
        value = _row_queries(dataset, fixed, query == "prompt", range(row, row + 1))[0]
        if len(value) != 1:
            raise DatasetError(f"row {row}: the benchmark needs one prompt or class per row, got {len(value)}")
        image = _decode_image(record[image_column], base, f"row {row}")
        mask = _decode_mask(record[mask_column], base, f"row {row}")
        if mask.shape != (image.height, image.width):
            raise DatasetError(
                f"row {row}: the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x"
                f"{image.height} (width x height); they must be the same size"
            )
        label = value[0]
        yield Example(
            image=image,
            mask=mask,
            prompt=label if query == "prompt" else None,
            label=label if query == "label" else None,
            source=f"row {row}",
        )


def _decode_mask(value, base: Path, where: str) -> np.ndarray:
    from PIL import Image

    from .evaluation.data import mask_from_image

    if isinstance(value, Image.Image):
        return mask_from_image(value)
    if isinstance(value, (dict, str)):
        source = value.get("bytes") if isinstance(value, dict) else None
        path = value.get("path") if isinstance(value, dict) else value
        try:
            if source is not None:
                picture = Image.open(io.BytesIO(source))
            else:
                file = Path(path).expanduser()
                picture = Image.open(file if file.is_absolute() else base / file)
            picture.load()
        except (OSError, ValueError, TypeError) as error:
            raise DatasetError(f"{where}: cannot read the mask ({error})") from None
        return mask_from_image(picture)
    if value is None:
        raise DatasetError(f"{where}: no mask in this row")
    return np.asarray(value) != 0


# --- writing example data sets -----------------------------------------------------------------------------------
def save_scenes(scenes, folder: str | os.PathLike, layout: str = "imagefolder") -> Path:
    """Write `synthetic` scenes as a data set: for tests, examples and throughput runs.

    Args:
        scenes: `synthetic.generate(...)` scenes.
        folder: where to write (created).
        layout: "imagefolder": `scene-NNNNN.png` files and a `metadata.jsonl` with each scene's "prompts" (one
            caption per object); "parquet": one `data.parquet` with one row per object: "image", "mask", "prompt",
            "label" (for the benchmark).

    Returns:
        What to pass as the data set: the folder (imagefolder) or the parquet file.
    """
    import datasets

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "imagefolder":
        lines = []
        for index, scene in enumerate(scenes):
            name = f"scene-{index:05d}.png"
            scene.image.save(folder / name)
            lines.append(json.dumps({"file_name": name, "prompts": scene.captions}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        return folder
    if layout != "parquet":
        raise ValueError(f"`layout` must be 'imagefolder' or 'parquet', got {layout!r}.")
    columns: dict[str, list] = {"image": [], "mask": [], "prompt": [], "label": []}
    for scene in scenes:
        for obj in scene.objects:
            columns["image"].append(scene.image)
            columns["mask"].append(_png(obj.mask))
            columns["prompt"].append(obj.caption)
            columns["label"].append(obj.label)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "prompt": datasets.Value("string"),
            "label": datasets.Value("string"),
        }
    )
    path = folder / "data.parquet"
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def _png(mask: np.ndarray):
    from PIL import Image

    return Image.fromarray(mask.astype(np.uint8) * 255)
