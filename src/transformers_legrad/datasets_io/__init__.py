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

The package is split by job: `reading` (data sets in: `read_dataset`, image columns, decoding, the rows' queries,
benchmark examples with masks), `explaining` (`explain_dataset`: the rows of this process's shards through the
explainer) and `results` (results out: shards, resume, the run fingerprint, the Parquet writer, `read_results`).
`save_scenes` (synthetic scenes written as a data set) lives beside the scenes, in `evaluation.synthetic`.
"""

from __future__ import annotations

from ..evaluation.synthetic import save_scenes
from .explaining import explain_dataset
from .reading import DatasetError, DatasetQuery, examples_from_dataset, image_base, read_dataset
from .results import (
    DEFAULT_SHARD_SIZE,
    RESULT_SCHEMA,
    RUN_FILE,
    process_shards,
    read_results,
    shard_file_name,
    shard_rows,
)

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "DatasetError",
    "DatasetQuery",
    "RESULT_SCHEMA",
    "RUN_FILE",
    "examples_from_dataset",
    "explain_dataset",
    "image_base",
    "process_shards",
    "read_dataset",
    "read_results",
    "save_scenes",
    "shard_file_name",
    "shard_rows",
]
