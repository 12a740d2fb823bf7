"""Safety: no pickle loading, no network connection on import or use, no remote code needed by the package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import transformers_legrad

SOURCE = Path(transformers_legrad.__file__).parent


def test_no_pickle_loading_in_the_package():
    pattern = re.compile(r"torch\.load\(|\bpickle\b|use_safetensors\s*=\s*False|weights_only\s*=\s*False")
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}"
        for path in SOURCE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders


def test_bundled_weights_are_safetensors_only():
    weights = [p for p in SOURCE.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".safetensors"}]
    assert all(p.suffix == ".safetensors" for p in weights), weights


@pytest.mark.slow
def test_import_and_explain_open_no_network_connection(clip, tmp_path):
    """In a fresh interpreter whose sockets refuse to connect, import the package and explain through it."""
    script = textwrap.dedent(f"""
        import socket
        attempts = []
        def refuse(sock, address):
            attempts.append(address)
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.create_connection = lambda *a, **k: refuse(None, a[0] if a else None)

        import transformers_legrad
        from transformers import pipeline
        from PIL import Image
        pipe = pipeline("legrad-explanation", model={clip.path!r})
        results = pipe(Image.new("RGB", (40, 40), (10, 200, 30)), candidate_labels=["a cat"])
        assert len(results) == 1
        assert not attempts, attempts
        print("NO-NETWORK-OK")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NO-NETWORK-OK" in result.stdout


def test_the_package_pipeline_needs_no_remote_code_for_an_exported_folder(clip, tmp_path):
    from transformers import pipeline

    from transformers_legrad.cli import main

    out = tmp_path / "exported"
    assert main(["export", clip.path, "--out", str(out), "--base-model", "openai/clip-vit-base-patch16"]) == 0
    pipe = pipeline("legrad-explanation", model=str(out))  # no trust_remote_code
    assert type(pipe).__module__ == "transformers_legrad.pipeline"
    assert len(pipe(Image.new("RGB", (30, 30), (0, 0, 255)), candidate_labels=["a cat"])) == 1
