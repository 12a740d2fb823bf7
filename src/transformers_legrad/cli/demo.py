"""`legrad demo --out DIR`: the bundled example scenes explained by a bundled demo model, as PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, UserError

__all__ = ["add_parser", "run"]


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    """Add `legrad demo` to the subcommands `commands`; `common` holds the options every subcommand takes."""
    demo = commands.add_parser(
        "demo", parents=[common], help="explain bundled example scenes with the bundled demo model"
    )
    demo.add_argument("--out", required=True, type=Path, help="output folder")
    demo.add_argument("--model", default="clip", choices=["clip", "siglip", "vit"], help="bundled model (clip)")
    demo.set_defaults(handler=run, user_errors=(UserError,))


def run(args: argparse.Namespace) -> int:
    """`legrad demo ...`: exit 0; a `UserError` when the demo models are not installed."""
    try:
        from ..demo import run_demo
    except ImportError:
        raise UserError(
            "the bundled demo models are not part of this installation; run `legrad explain IMAGE --model "
            "openai/clip-vit-base-patch16 --prompt 'a cat' --out DIR` on a checkpoint you have"
        ) from None
    try:
        written = run_demo(args.out, model=args.model)
    except FileNotFoundError as error:
        raise UserError(str(error)) from error
    grids = [path for path in written if path.name.endswith("_grid.png")]
    print(f"wrote {len(written)} files to {args.out}; start with {grids[0].name}" if grids else f"wrote {args.out}")
    return EXIT_OK
