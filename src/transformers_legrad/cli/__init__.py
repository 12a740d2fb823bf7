"""The `legrad` command line: explain folders of images or data sets, benchmark, export Hub-ready pipelines, demo.

    legrad explain IMAGE_OR_DIR... --model ID_OR_DIR --prompt TEXT [--prompt TEXT ...] --out DIR
    legrad explain IMAGE_OR_DIR... --model VIT_ID --top-k 3 --out DIR
    legrad explain --dataset NAME_OR_PATH [--split S] --model ID_OR_DIR --prompt TEXT --out DIR   (sharded Parquet)
    accelerate launch --num_processes N -m transformers_legrad.cli explain --dataset ...        (N processes)
    legrad benchmark --json results.json [--model ID_OR_DIR] [--manifest FILE | --dataset NAME_OR_PATH]
    legrad export MODEL --out DIR
    legrad demo --out DIR

One argparse tree: each subcommand is a module of this package (`explain`, `benchmark`, `export`, `demo`) that adds
its parser and runs it; `common` holds what they share. User errors (a bad flag, an unknown model, an unreadable
image) are reported in one line on stderr, without a traceback (`--debug` shows it). A bad image among many is
reported by name and skipped; the others are written, and the exit status is 1 if any input failed. The library
never imports this package: it raises `ValueError` subclasses, which the subcommands turn into user errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import benchmark, demo, explain, export
from .common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UserError,
    add_dataset_arguments,
    load_pipeline,
    parse_image_size,
    parse_layers,
    run_command,
)

__all__ = [
    "EXIT_INPUT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UserError",
    "add_dataset_arguments",
    "build_parser",
    "load_pipeline",
    "main",
    "parse_image_size",
    "parse_layers",
    "run_command",
]


def build_parser() -> argparse.ArgumentParser:
    """The `legrad` parser: one subparser per subcommand, each with its `handler` and `user_errors` as defaults."""
    parser = argparse.ArgumentParser(prog="legrad", description="LeGrad explainability maps for vision transformers.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    explain.add_parser(commands, common)
    export.add_parser(commands, common)
    benchmark.add_parser(commands)
    demo.add_parser(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `legrad ARGS...` (default: `sys.argv[1:]`) and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given, for the records a subcommand writes
    return run_command(lambda: args.handler(args), args.debug, args.user_errors)
