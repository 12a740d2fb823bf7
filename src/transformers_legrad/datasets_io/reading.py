"""Data sets in: reading one split of a Hugging Face data set, its image and mask cells, and what to explain per row.

`read_dataset` opens a local folder or file, or a Hub name, with `datasets`; `DatasetQuery` and `_row_queries` say
what to explain in each row (the same prompts or classes for all, or a column of them); `examples_from_dataset`
turns a data set with an object mask per row into the benchmark's `evaluation.data.Example`s. Every problem is a
`DatasetError` (a `ValueError`) whose message names the data set, column or row and the fix.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation.data import Example, mask_from_image

__all__ = ["DatasetError", "DatasetQuery", "examples_from_dataset", "image_base", "read_dataset"]

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

    from .. import images

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
