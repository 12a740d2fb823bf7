"""The package's public surface, and the README's test command being the one CI runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import transformers_legrad

ROOT = Path(__file__).resolve().parents[1]


def test_public_names():
    assert {"LeGradExplainer", "LeGradOutput", "SUPPORTED_MODEL_CLASSES"} <= set(transformers_legrad.__all__)
    assert transformers_legrad.__version__


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = re.findall(r"^\.venv/bin/(python -m pytest[^\n]*)$", ci, flags=re.M)
    assert ci_commands, "no pytest command in .ci/run"
    for command in ci_commands:
        assert f"\n{command} " in readme or f"\n{command}\n" in readme, f"README does not show `{command}`"


def test_no_pickle_weights_in_the_repository():
    """Weights ship as safetensors only: nothing that `torch.load` would unpickle is tracked."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    pickles = [name for name in listed.stdout.splitlines() if name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    assert not pickles
