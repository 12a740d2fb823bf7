"""`legrad export MODEL --out DIR`: a Hub-ready folder with the weights, the processor, the pipeline and a card."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, UserError, load_pipeline

__all__ = ["add_parser", "run"]


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    """Add `legrad export` to the subcommands `commands`; `common` holds the options every subcommand takes."""
    export = commands.add_parser(
        "export", parents=[common], help="write a Hub-ready folder: weights, processor, pipeline, card"
    )
    export.add_argument("model", help="Hub id or local folder of a supported model")
    export.add_argument("--out", required=True, type=Path, help="output folder")
    export.add_argument(
        "--base-model", default=None, help="Hub id of the base checkpoint, for the card (needed for a local MODEL)"
    )
    export.set_defaults(handler=run, user_errors=(UserError,))


def run(args: argparse.Namespace) -> int:
    """`legrad export ...`: exit 0; a `UserError` for what the user can fix."""
    from ..export import export_pipeline

    base_model = args.base_model
    if base_model is None:
        if Path(args.model).expanduser().exists():
            raise UserError(f"{args.model} is a local folder: name its Hub checkpoint with --base-model ORG/NAME")
        base_model = args.model
    pipe = load_pipeline(args.model, None, None)
    try:
        folder = export_pipeline(pipe, args.out, model_id=base_model)
    except ValueError as error:
        raise UserError(str(error)) from error
    print(f"wrote a Hub-ready folder to {folder}")
    return EXIT_OK
