"""Explaining a data set: the rows of this process's shards through the explainer, in batches that share prompts.

`explain_dataset` checks what to explain against the model and the data set, claims the output folder for the run
(`results._claim_run`), skips the shards a previous run completed, and writes the others with `results._ShardWriter`.
An unreadable image is reported by row and skipped; everything else that cannot work is a `DatasetError`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .reading import DatasetError, DatasetQuery, _decode_image, _image_column, _image_name, _row_queries
from .results import (
    DEFAULT_SHARD_SIZE,
    _claim_run,
    _shard_fingerprint,
    _ShardWriter,
    process_shards,
    shard_file_name,
    shard_rows,
)

__all__ = ["explain_dataset"]


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
