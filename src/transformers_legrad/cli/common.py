"""What the `legrad` subcommands share: the user error and exit codes, option parsers, and loading a model.

The library raises `ValueError` subclasses (`datasets_io.DatasetError`, `evaluation.data.ManifestError`, ...) and
never imports the CLI; the subcommands turn what the user can fix into `UserError`, and `run_command` turns that into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "EXIT_INPUT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UserError",
    "add_dataset_arguments",
    "load_pipeline",
    "parse_image_size",
    "parse_layers",
    "run_command",
]

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A problem the user can fix; reported in one line, without a traceback."""


def run_command(
    command: Callable[[], int], debug: bool, user_errors: tuple[type[Exception], ...] = (UserError,)
) -> int:
    """Run a subcommand: a user error is one line on stderr and exit status 2 (`debug`: the traceback instead)."""
    try:
        return command()
    except user_errors as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The data-set inputs `legrad explain` and `legrad benchmark` share."""
    group = parser.add_argument_group("data set input (Hugging Face datasets)")
    group.add_argument(
        "--dataset",
        default=None,
        metavar="NAME_OR_PATH",
        help="a folder (imagefolder, parquet/JSONL files, save_to_disk), a parquet/JSONL/CSV file, or a Hub name",
    )
    group.add_argument("--split", default=None, help="data-set split (default: the only one)")
    group.add_argument("--image-column", default=None, help="image column (default: the first Image column)")
    group.add_argument(
        "--prompt-column",
        default=None,
        help="column with each row's prompt(s) (CLIP/SigLIP) or class name/id (classifiers), instead of --prompt",
    )
    group.add_argument(
        "--prompt-template", default="{}", help="how a --prompt-column value becomes a prompt, e.g. 'a photo of a {}'"
    )


def parse_layers(text: str | None):
    """'all', 'N' (the last N blocks) or a comma-separated list of block indices."""
    if text is None or text == "all":
        return text
    try:
        if "," not in text:
            return int(text)
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--layers must be 'all', N or indices like 0,5,-1; got {text!r}") from None


def parse_image_size(text: str | None):
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match:
        raise UserError(f"--image-size must be N or HxW (e.g. 448 or 448x336); got {text!r}")
    height = int(match.group(1))
    return height if match.group(2) is None else (height, int(match.group(2)))


def parse_options(items: list[str]) -> dict[str, object]:
    """`--option NAME=VALUE` arguments as keywords: true/false as bools, integers and numbers as such, else text."""
    options: dict[str, object] = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name.isidentifier():
            raise UserError(f"--option {item!r}: write it as NAME=VALUE, e.g. --option use_itm_head=false")
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            options[name] = lowered == "true"
        else:
            try:
                options[name] = int(text)
            except ValueError:
                try:
                    options[name] = float(text)
                except ValueError:
                    options[name] = text
    return options


def load_pipeline(model: str, device: str | None, dtype: str | None, options: dict[str, object] | None = None):
    """The `legrad-explanation` pipeline for `model` (with its family's `options`), or UserError when it cannot be
    loaded."""
    import torch
    from transformers import pipeline

    from .. import pipeline as _  # noqa: F401  (registers the task)

    local = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
    if looks_local and not local.exists():
        raise UserError(f"{model}: no such model folder")
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"{model}: not a model folder (no config.json)")
        model = str(local)
    kwargs = dict(options or {})
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype)
    if device == "auto":
        kwargs["device_map"] = "auto"
    elif device is not None:
        kwargs["device"] = device
    try:
        return pipeline("legrad-explanation", model=model, **kwargs)
    except TypeError as error:
        raise UserError(f"{model}: {error}") from error
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"could not load model {model!r}: {str(error).splitlines()[0]}") from error
