"""The Space app's request handler, in-process (no browser), and the Space's metadata files.

`tests/test_space_browser.py` drives the same app in Chromium; these tests cover what a page cannot see cheaply:
the downloaded maps, classifiers, the layer controls, and every readable error. Skipped without gradio.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from transformers_legrad import demo

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "examples" / "space"

gr = pytest.importorskip("gradio", reason="the Space app needs gradio: pip install -e '.[space]'")


@pytest.fixture(scope="module")
def app():
    for name in ("clip", "vit"):
        try:
            demo.model_path(name)
        except FileNotFoundError as error:
            pytest.skip(f"bundled demo model not installed: {error}")
    spec = importlib.util.spec_from_file_location("legrad_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scene():
    example = demo.example_scenes(1)[0]
    return example.image.resize((256, 192)), example.prompts  # not square: maps keep the image's own size


def test_prompts_give_one_captioned_overlay_each_and_a_zip_of_maps(app, scene):
    image, prompts = scene
    gallery, archive_path, status, words = app.explain(
        image, "\n".join(prompts) + "\n\n", app.DEFAULT_MODEL, 3, app.LAST_N, 2
    )
    assert len(gallery) == len(prompts)
    captions = [re.fullmatch(r"(.+) · ([0-9.]+)", caption).groups() for _, caption in gallery]
    assert sorted(label for label, _ in captions) == sorted(prompts)
    assert sum(float(score) for _, score in captions) == pytest.approx(1.0, abs=2e-3)
    assert all(overlay.size == image.size for overlay, _ in gallery)
    assert f"{len(prompts)} map(s)" in status and "Demo CLIP" in status
    # One header per prompt, in the gallery's order, then its words shaded in [0, 1] with its top word at 1.
    heads = [text for text, shade in words if shade is None]
    assert [head.strip(" |").rstrip(":") for head in heads] == [label for label, _ in captions]
    groups = _groups(words)
    assert [[text.strip() for text, _ in group] for group in groups] == [label.split() for label, _ in captions]
    shades = [[shade for _, shade in group] for group in groups]
    assert all(0.0 <= s <= 1.0 for group in shades for s in group) and all(max(g) == 1.0 for g in shades)

    with zipfile.ZipFile(archive_path) as archive:
        names = archive.namelist()
        with np.load(io.BytesIO(archive.read("maps.npz"))) as maps:
            assert maps["maps"].shape == (len(prompts), image.height, image.width)
            assert maps["maps"].dtype == np.float32 and 0 <= maps["maps"].min() and maps["maps"].max() <= 1
            # Min-max normalized heatmaps, resized onto the image: each still spans (nearly) the whole [0, 1].
            assert (maps["maps"].max(axis=(1, 2)) > 0.9).all() and (maps["maps"].min(axis=(1, 2)) < 0.1).all()
            assert maps["labels"].tolist() == [label for label, _ in captions]
            assert maps["layers"].tolist() == [2, 3]  # the last 2 of the demo CLIP's 4 blocks
        png = next(name for name in names if name.endswith("_heatmap.png"))
        assert Image.open(io.BytesIO(archive.read(png))).size == image.size
    assert len([name for name in names if name.endswith(".png")]) == 2 * len(prompts)


def test_the_layer_controls_choose_the_explained_blocks(app, scene):
    assert app.selected_layers(app.LAST_N, 2, 12) == [10, 11]
    assert app.selected_layers(app.LAST_N, 30, 4) == [0, 1, 2, 3]  # clamped to the model's blocks
    assert app.selected_layers(app.ONE_BLOCK, 1, 12) == [0]
    assert app.selected_layers(app.ONE_BLOCK, 12, 12) == [11]
    image, prompts = scene
    _, last_two, status, _ = app.explain(image, prompts[0], app.DEFAULT_MODEL, 3, app.LAST_N, 2)
    _, first_only, first_status, _ = app.explain(image, prompts[0], app.DEFAULT_MODEL, 3, app.ONE_BLOCK, 1)
    assert "blocks 3-4 of 4" in status and "block 1 of 4" in first_status  # counted from 1, as the slider
    maps = [np.load(io.BytesIO(zipfile.ZipFile(path).read("maps.npz")))["maps"] for path in (last_two, first_only)]
    assert np.abs(maps[0] - maps[1]).max() > 0.05  # another block gives another map


def test_a_classifier_explains_its_top_k_or_the_named_classes(app, scene):
    image, _ = scene
    gallery, _, _, words = app.explain(image, "", f"{app.DEMO_PREFIX}vit", 2, app.LAST_N, 2)
    assert words == []  # a classifier's classes have no words
    scores = [float(caption.rsplit(" ", 1)[1]) for _, caption in gallery]
    assert len(gallery) == 2 and scores == sorted(scores, reverse=True)
    gallery, _, _, _ = app.explain(image, "red circle\nblue ring", f"{app.DEMO_PREFIX}vit", 2, app.LAST_N, 2)
    assert sorted(caption.split(" · ")[0] for _, caption in gallery) == ["blue ring", "red circle"]
    layers, prompts, top_k = app.model_changed(f"{app.DEMO_PREFIX}vit", 2)
    assert top_k["visible"] is True and "Classes" in prompts["label"] and layers["maximum"] == 4
    _, prompts, top_k = app.model_changed(app.DEFAULT_MODEL, 2)
    assert top_k["visible"] is False and prompts["label"] == "Prompts, one per line"


@pytest.mark.parametrize(
    ("image", "text", "model", "message"),
    [
        (True, "", "demo:clip", "Enter at least one prompt, one per line"),
        (True, " \n\t\n", "demo:clip", "Enter at least one prompt, one per line"),
        (False, "a cat", "demo:clip", "Upload an image"),
        (True, "\n".join(f"p{i}" for i in range(17)), "demo:clip", "At most 16 prompts"),
        (True, "zebra", "demo:vit", "unknown target label 'zebra'"),
        (True, "a cat", "/nonexistent/model-folder", "Could not load /nonexistent/model-folder"),
    ],
)
def test_bad_requests_give_a_readable_error(app, scene, image, text, model, message):
    with pytest.raises(gr.Error, match=re.escape(message)):
        app.explain(scene[0] if image else None, text, model, 3, app.LAST_N, 2)


def test_the_page_builds_with_the_example_scenes(app):
    with app.build_app() as page:
        config = page.get_config_file()
    types = [component["type"] for component in config["components"]]
    assert {"image", "textbox", "dropdown", "gallery", "slider", "file", "button"} <= set(types)
    rows = app.example_images()
    assert len(rows) == app.NUM_EXAMPLES and all(Path(path).is_file() for path, _ in rows)
    assert all(len(prompts.splitlines()) >= 3 for _, prompts in rows)  # each object, and one absent object


def test_space_metadata():
    text = (SPACE / "README.md").read_text()
    front_matter = yaml.safe_load(text.split("---\n")[1])
    assert front_matter["sdk"] == "gradio" and (SPACE / front_matter["app_file"]).is_file()
    assert len(front_matter["short_description"]) <= 60  # the Hub's limit
    requirements = (SPACE / "requirements.txt").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    gradio_range = re.search(r'space = \["gradio([^"]+)"\]', pyproject).group(1)
    assert f"gradio{gradio_range}" in requirements.splitlines()
    lower, upper = re.fullmatch(r">=([\d.]+),<(\d+)", gradio_range).groups()
    version = tuple(int(part) for part in front_matter["sdk_version"].split("."))
    assert tuple(int(part) for part in lower.split(".")) <= version < (int(upper),)


def test_pruning_old_outputs_keeps_the_example_scenes(app):
    examples = app.example_images()
    old = app._OUTPUT_DIR / "stale-request"
    old.mkdir(parents=True, exist_ok=True)
    (old / "maps.zip").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for folder in (old, app._EXAMPLES_DIR):
        os.utime(folder, (two_hours_ago, two_hours_ago))
    app._prune_outputs()
    assert not old.exists()
    assert all(Path(image).is_file() for image, _ in examples)


def _groups(words):
    """The shaded (word, shade) pairs of each prompt, split at the prompt headers (shade None)."""
    groups = []
    for text, shade in words:
        if shade is None:
            groups.append([])
        else:
            groups[-1].append((text, shade))
    return groups
