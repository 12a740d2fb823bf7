"""The `legrad` command line: files written, exit codes, one-line messages for user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from transformers_legrad.cli import main, parse_image_size, parse_layers

from tiny_models import random_image


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        random_image(index, (64, 48)).save(folder / f"scene {index}.png")
    (folder / "notes.txt").write_text("not an image, and not listed: wrong suffix")
    return folder


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_folder_with_prompts(clip, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run(
        [
            "explain",
            image_folder,
            "--model",
            clip.path,
            "--prompt",
            "a cat",
            "--prompt",
            "a red circle",
            "--out",
            out,
            "--batch-size",
            "2",
            "--layers",
            "all",
        ],
        capsys,
    )
    assert code == 0, stderr
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 6
    assert {record["label"] for record in records} == {"a cat", "a red circle"}
    for record in records:
        assert set(record) == {"image", "label", "score", "overlay", "heatmap", "grid"}
        overlay, heatmap = Image.open(out / record["overlay"]), Image.open(out / record["heatmap"])
        assert overlay.mode == "RGB" and overlay.size == (64, 48)
        assert heatmap.mode == "L" and heatmap.size == (64, 48)
        assert Image.open(out / record["grid"]).width > 64
    assert len(list(out.glob("*_grid.png"))) == 3
    assert "wrote maps for 3 image(s)" in stdout


def test_bad_images_are_reported_and_skipped(clip, image_folder, tmp_path, capsys):
    broken = image_folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG signature, then nothing valid
    fake = image_folder / "fake.jpg"
    fake.write_text("just text")
    out = tmp_path / "out"
    code, stdout, stderr = run(
        ["explain", image_folder, tmp_path / "missing.png", "--model", clip.path, "--prompt", "a cat", "--out", out],
        capsys,
    )
    assert code == 1
    assert "broken.png" in stderr and "fake.jpg" in stderr and "missing.png: no such file" in stderr
    assert "Traceback" not in stderr
    records = json.loads((out / "results.json").read_text())
    assert len({record["image"] for record in records}) == 3
    assert "3 failed" in stdout


def test_classifier_top_k_and_target(vit, image_folder, tmp_path, capsys):
    code, _, stderr = run(
        ["explain", image_folder / "scene 0.png", "--model", vit.path, "--top-k", "2", "--out", tmp_path / "a"], capsys
    )
    assert code == 0, stderr
    assert len(json.loads((tmp_path / "a" / "results.json").read_text())) == 2
    code, _, stderr = run(
        [
            "explain",
            image_folder / "scene 0.png",
            "--model",
            vit.path,
            "--target",
            "frog",
            "--target",
            "1",
            "--out",
            tmp_path / "b",
        ],
        capsys,
    )
    assert code == 0, stderr
    labels = {r["label"] for r in json.loads((tmp_path / "b" / "results.json").read_text())}
    assert labels == {"frog", "dog"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "/no/such/folder", "--prompt", "a"], "no such model folder"),
        (["--model", "{vit}", "--prompt", "a"], "image classifier"),
        (["--model", "{vit}", "--target", "zebra"], "unknown target label 'zebra'"),
        (["--model", "{clip}"], "give at least one --prompt"),
        (["--model", "{clip}", "--prompt", "a", "--top-k", "2"], "are for image classifiers"),
        (["--model", "{clip}", "--prompt", "a", "--layers", "x"], "--layers must be"),
        (["--model", "{clip}", "--prompt", "a", "--layers", "7"], "the model has 4"),
        (["--model", "{clip}", "--prompt", "a", "--image-size", "big"], "--image-size must be"),
        (["--model", "{clip}", "--prompt", "a", "--batch-size", "0"], "--batch-size"),
        (["--model", "{tmp}", "--prompt", "a"], "not a model folder"),
    ],
)
def test_user_errors_are_one_line_without_traceback(clip, vit, image_folder, tmp_path, capsys, extra, message):
    extra = [e.format(clip=clip.path, vit=vit.path, tmp=tmp_path) for e in extra]
    code, _, stderr = run(["explain", image_folder, "--out", tmp_path / "out", *extra], capsys)
    assert code == 2
    assert message in stderr and stderr.startswith("error: ") and "Traceback" not in stderr


def test_debug_shows_the_traceback(clip, image_folder, tmp_path):
    from transformers_legrad.cli import UserError

    with pytest.raises(UserError, match="give at least one --prompt"):
        main(["explain", str(image_folder), "--model", clip.path, "--out", str(tmp_path), "--debug"])


@pytest.mark.slow
def test_bad_flag_is_a_usage_error_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "transformers_legrad.cli",
            "explain",
            "x",
            "--out",
            str(tmp_path),
            "--model",
            "m",
            "--frobnicate",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --frobnicate" in result.stderr and "Traceback" not in result.stderr


def test_parsers():
    assert parse_layers(None) is None and parse_layers("all") == "all" and parse_layers("3") == 3
    assert parse_layers("0,5,-1") == [0, 5, -1]
    assert parse_image_size("448") == 448 and parse_image_size("448x336") == (448, 336)


def test_benchmark_subcommand(clip, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--model", clip.path, "--n", "2", "--no-perturbation", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "legrad" in json.loads(out.read_text())["runs"][0]["methods"]
