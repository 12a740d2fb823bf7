"""Every script in `examples/` runs offline on the bundled demo models and writes the files it documents.

The scripts run in-process (their `main(argv)`), with `--model` pointing at a bundled demo model; one runs as a
subprocess, as a user would start it.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from transformers_legrad import demo
from transformers_legrad.evaluation import synthetic

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCENE_SIZE = 256  # the bundled scenes as the examples draw them (`_common.SCENE_DISPLAY_SIZE`)
TESTED = {
    "clip_prompts",
    "siglip_prompts",
    "vit_top3",
    "batch_folder",
    "large_checkpoint_bf16",
    "layer_maps",
    "high_resolution",
}

pytestmark = pytest.mark.slow  # each test runs a script or a demo model (a few seconds on 2 cores)


def demo_model(name: str) -> str:
    try:
        return str(demo.model_path(name))
    except FileNotFoundError as error:
        pytest.skip(f"bundled demo model not installed: {error}")


def run_example(name: str, *argv: str) -> None:
    """Import `examples/{name}.py` afresh and call its `main` with `argv`."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main([str(arg) for arg in argv])
    finally:
        sys.path.remove(str(EXAMPLES))


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG", path
        return image.size


def default_prompts() -> list[str]:
    example = demo.example_scenes(1)[0]
    return [*example.prompts, example.absent_prompt]


def slug(text: str) -> str:
    return text.replace(" ", "-")


def test_every_example_is_tested():
    scripts = {path.stem for path in EXAMPLES.glob("*.py") if not path.stem.startswith("_")}
    assert scripts == TESTED


def test_clip_prompts(tmp_path, capsys):
    run_example("clip_prompts", "--model", demo_model("clip"), "--out", tmp_path)
    prompts = default_prompts()
    for prompt in prompts:
        assert png_size(tmp_path / f"scene0_{slug(prompt)}.png") == (SCENE_SIZE, SCENE_SIZE)
    width, height = png_size(tmp_path / "scene0_grid.png")
    assert width > (len(prompts) + 1) * 0.6 * SCENE_SIZE and height > SCENE_SIZE * 0.9
    scores = [float(line.rsplit(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(scores) == len(prompts) and all(0 <= s <= 1 for s in scores)
    assert sum(scores) == pytest.approx(1.0, abs=2e-3)  # CLIP: softmax over the prompts
    assert scores == sorted(scores, reverse=True)


def test_clip_prompts_on_own_images(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    scenes = synthetic.generate(2, seed=3)
    scenes[0].image.save(folder / "first.png")
    scenes[1].image.resize((80, 48)).save(folder / "nested" / "second.jpg")
    out = tmp_path / "out"
    run_example(
        "clip_prompts", "--model", demo_model("clip"), "--images", folder, "--prompt", "a red ring", "--out", out
    )
    assert png_size(out / "first_a-red-ring.png") == (64, 64)
    assert png_size(out / "second_a-red-ring.png") == (80, 48)  # overlays keep each image's own size
    with pytest.raises(SystemExit, match="--prompt"):
        run_example("clip_prompts", "--model", demo_model("clip"), "--images", folder, "--out", out)
    with pytest.raises(SystemExit, match="neither an image file nor a folder"):
        run_example("clip_prompts", "--images", tmp_path / "missing.png", "--prompt", "a", "--out", out)


def test_siglip_prompts(tmp_path, capsys):
    run_example("siglip_prompts", "--model", demo_model("siglip"), "--out", tmp_path)
    corrected, uncorrected = tmp_path / "scene0_grid.png", tmp_path / "scene0_uncorrected_grid.png"
    assert png_size(corrected) == png_size(uncorrected)
    assert Image.open(corrected).tobytes() != Image.open(uncorrected).tobytes()  # the correction changed the maps
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(default_prompts())
    assert all(0 <= float(line.rsplit(" ", 1)[1]) <= 1 for line in lines)


def test_vit_top3(tmp_path, capsys):
    run_example("vit_top3", "--model", demo_model("vit"), "--out", tmp_path)
    for rank in (1, 2, 3):
        assert png_size(tmp_path / f"scene0_top{rank}.png") == (SCENE_SIZE, SCENE_SIZE)
    assert not (tmp_path / "scene0_top4.png").exists()
    assert png_size(tmp_path / "scene0_grid.png")[0] > 3 * SCENE_SIZE
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split("'")[1] for line in lines]
    scores = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert len(set(labels)) == 3 and set(labels) <= set(synthetic.LABELS)
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-3
    # the demo ViT names the largest object of the scene; it is the first class
    assert labels[0] == max(demo.example_scenes(1)[0].scene.objects, key=lambda obj: obj.area).label


def test_batch_folder(tmp_path, capsys):
    run_example("batch_folder", "--model", demo_model("clip"), "--num-scenes", 3, "--batch-size", 2, "--out", tmp_path)
    prompts = default_prompts()
    with open(tmp_path / "scores.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["image", "label", "score", "peak_x", "peak_y"]
    assert len(rows) == 3 * len(prompts)
    assert {row["image"] for row in rows} == {"scene0.png", "scene1.png", "scene2.png"}
    for image in ("scene0.png", "scene1.png", "scene2.png"):
        mine = [row for row in rows if row["image"] == image]
        assert sorted(row["label"] for row in mine) == sorted(prompts)
        assert sum(float(row["score"]) for row in mine) == pytest.approx(1.0, abs=1e-3)
        assert all(0 <= int(row["peak_x"]) < SCENE_SIZE and 0 <= int(row["peak_y"]) < SCENE_SIZE for row in mine)
        assert png_size(tmp_path / "images" / image) == (SCENE_SIZE, SCENE_SIZE)
    assert len(list(tmp_path.glob("scene*_*.png"))) == 3 * len(prompts)
    assert "3 images x 3 prompts" in capsys.readouterr().out


def test_batch_folder_scores_do_not_depend_on_batch_size(tmp_path):
    for batch_size in (1, 2):
        run_example(
            "batch_folder", "--model", demo_model("clip"), "--num-scenes", 2, "--batch-size", batch_size,
            "--out", tmp_path / str(batch_size),
        )  # fmt: skip
    one, two = ((tmp_path / str(b) / "scores.csv").read_text().splitlines() for b in (1, 2))
    assert len(one) == len(two) == 1 + 2 * len(default_prompts())
    for row_one, row_two in zip(one[1:], two[1:], strict=True):
        image, label, score, *_ = row_one.split(",")
        assert row_two.split(",")[:2] == [image, label]
        assert float(row_two.split(",")[2]) == pytest.approx(float(score), abs=1e-4)


def test_large_checkpoint_bf16_runs_on_cpu(tmp_path, capsys):
    run_example("large_checkpoint_bf16", "--model", demo_model("clip"), "--out", tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert "torch.bfloat16" in lines[0] and "'cpu'" in lines[0]
    scores = [float(line.rsplit(" ", 1)[1]) for line in lines[1:]]
    assert len(scores) == len(default_prompts()) and sum(scores) == pytest.approx(1.0, abs=5e-3)
    for prompt in default_prompts():
        assert png_size(tmp_path / f"scene0_{slug(prompt)}.png") == (SCENE_SIZE, SCENE_SIZE)
    assert (tmp_path / "scene0_grid.png").is_file()


def test_layer_maps(tmp_path):
    run_example("layer_maps", "--model", demo_model("clip"), "--out", tmp_path)
    num_layers = demo.load("clip")[0].config.vision_config.num_hidden_layers
    width, height = png_size(tmp_path / "scene0_layers.png")
    # one row per prompt; each row: the image, one tile per block and the summed map (160 px tiles)
    assert width >= (num_layers + 2) * 160
    assert height >= len(default_prompts()) * 160


def test_high_resolution(tmp_path, capsys):
    run_example("high_resolution", "--model", demo_model("clip"), "--image-size", 96, "--out", tmp_path)
    for prompt in default_prompts():
        assert png_size(tmp_path / f"scene0_{slug(prompt)}_96px.png") == (SCENE_SIZE, SCENE_SIZE)
    assert png_size(tmp_path / "scene0_compare.png")[1] > SCENE_SIZE  # 2 x prompts + 1 tiles: more than a row
    assert len(capsys.readouterr().out.splitlines()) == len(default_prompts())


def test_an_example_runs_as_a_script(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, str(EXAMPLES / "vit_top3.py"), "--model", demo_model("vit"), "--top-k", "2"]
    done = subprocess.run([*command, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scene0_grid.png", "scene0_top1.png", "scene0_top2.png"]
    usage = subprocess.run(
        [sys.executable, str(EXAMPLES / "vit_top3.py"), "--help"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
    )
    assert "google/vit-base-patch16-224" in usage.stdout


def test_batch_folder_keeps_same_named_images_of_subfolders_apart(tmp_path):
    scenes = demo.example_scenes(2)
    for folder, example in zip(("cats", "dogs"), scenes, strict=True):
        (tmp_path / "in" / folder).mkdir(parents=True)
        example.image.save(tmp_path / "in" / folder / "001.png")
    run_example(
        "batch_folder", "--model", demo_model("clip"), "--images", tmp_path / "in", "--prompt", "a red circle",
        "--out", tmp_path / "out",
    )  # fmt: skip
    with open(tmp_path / "out" / "scores.csv", newline="") as file:
        assert [row["image"] for row in csv.DictReader(file)] == ["cats/001.png", "dogs/001.png"]
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == [
        "cats-001_a-red-circle.png",
        "dogs-001_a-red-circle.png",
    ]
