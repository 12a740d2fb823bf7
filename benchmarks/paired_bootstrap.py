"""Paired differences between benchmark methods, with 95% confidence intervals from a scene-level bootstrap.

    python benchmarks/paired_bootstrap.py benchmarks/localization.json --reference legrad

Reads a `legrad benchmark --per-example` JSON file. For every run (model) and every other method, prints the mean
of (reference - other) over the examples for the per-example metrics, with a 95% percentile interval from
resampling whole images (the objects of one scene share an image, so they are not independent draws). An interval
that excludes 0 means the difference is unlikely to be noise of this sample of scenes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: per-example key -> (column name, True when higher is better)
METRICS = {
    "foreground_iou": ("p-mIoU", True),
    "fg_ap": ("fg AP", True),
    "pointing": ("pointing", True),
    "pos_auc": ("pos AUC", False),
    "neg_auc": ("neg AUC", True),
}


def image_of(source: str) -> str:
    """The image an example belongs to: "synthetic seed=S scene=I object=J" -> "synthetic seed=S scene=I"."""
    return source.rsplit(" object=", 1)[0]


def paired_differences(run: dict, reference: str, other: str, resamples: int, seed: int) -> dict[str, tuple]:
    """{metric: (mean difference, low, high)} of reference - other."""
    records = run["examples"]
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(image_of(record["source"]), []).append(index)
    members = list(groups.values())
    rng = np.random.default_rng(seed)
    draws = [
        np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))]) for _ in range(resamples)
    ]
    result = {}
    for key in METRICS:
        if records[0]["methods"][reference].get(key) is None:
            continue
        difference = np.array(
            [float(r["methods"][reference][key]) - float(r["methods"][other][key]) for r in records], dtype=np.float64
        )
        means = np.array([difference[draw].mean() for draw in draws])
        low, high = np.percentile(means, [2.5, 97.5])
        result[key] = (float(difference.mean()), float(low), float(high))
    return result


def table(run: dict, reference: str, resamples: int, seed: int) -> str:
    others = [method for method in run["methods"] if method != reference]
    keys = [key for key in METRICS if run["examples"][0]["methods"][reference].get(key) is not None]
    header = ["vs", *(f"{METRICS[key][0]} {'(+ better)' if METRICS[key][1] else '(- better)'}" for key in keys)]
    lines = [
        f"{run['model']}: {reference} minus each method, mean [95% CI], {run['n']} examples",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for other in others:
        values = paired_differences(run, reference, other, resamples, seed)
        cells = [other, *(f"{values[k][0]:+.3f} [{values[k][1]:+.3f}, {values[k][2]:+.3f}]" for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="JSON written by `legrad benchmark --per-example`")
    parser.add_argument("--reference", default="legrad", help="the method the others are compared with")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    record = json.loads(args.results.read_text())
    for run in record["runs"]:
        if "examples" not in run:
            print(f"{run['model']}: no per-example values (run the benchmark with --per-example)", file=sys.stderr)
            return 2
        print(table(run, args.reference, args.resamples, args.seed) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
