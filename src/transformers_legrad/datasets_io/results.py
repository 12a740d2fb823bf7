"""Results out: the shards of a run, its fingerprint (resume, refusing another run's folder), and the Parquet files.

Rows are cut into shards of `shard_size` rows in data-set order (`shard_rows`); process p of n writes the shards i
with i % n == p (`process_shards`). `run.json` records the settings of a run and their fingerprint, which every
complete shard file carries in its Parquet metadata, so a rerun skips complete shards and refuses a folder that
holds another run. `_ShardWriter` turns explanations into result rows (`RESULT_SCHEMA`) and writes each shard
atomically; `read_results` reads a finished run back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .reading import DatasetError, _require_datasets

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "RESULT_SCHEMA",
    "RUN_FILE",
    "process_shards",
    "read_results",
    "shard_file_name",
    "shard_rows",
]

#: Rows per output shard unless `shard_size` says otherwise.
DEFAULT_SHARD_SIZE = 256
RUN_FILE = "run.json"
_SHARD_PATTERN = "shard-*.parquet"
_METADATA_KEY = b"transformers_legrad"


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


class _ShardWriter:
    """Turns explanations into result rows and writes a shard's rows as one Parquet file."""

    def __init__(self, explainer, out: Path, fingerprint: str, num_shards: int, save_png, alpha, colormap):
        self.explainer, self.out, self.fingerprint, self.num_shards = explainer, out, fingerprint, num_shards
        self.save_png, self.alpha, self.colormap = save_png, alpha, colormap

    def records(self, output, rows: list[int], ids: list[str], pictures, image_size) -> list[dict]:
        records = []
        for b, (row, image_id) in enumerate(zip(rows, ids, strict=True)):
            labels = output.labels_for(b)
            height, width = output.grid_shapes[b]
            full_maps = self._maps_on_original(output, b, pictures[b], image_size) if self.save_png else None
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
                    record.update(self._pngs(full_maps[k], k, row, label, pictures[b]))
                records.append(record)
        return records

    def _maps_on_original(self, output, b: int, picture, image_size):
        """Image b's heatmaps on its original picture, float32 [prompts, height, width]."""
        from .. import geometry

        size_kwargs = self.explainer.image_processor_kwargs(image_size)
        return geometry.maps_on_original(
            output.heatmaps[b], output.image_sizes[b], picture.size, self.explainer.image_processor, size_kwargs
        )

    def _pngs(self, full, k: int, row: int, label: str, picture) -> dict:
        from .. import visualize

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
