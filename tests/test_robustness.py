"""Hostile inputs: image modes and sizes, broken files, odd prompts, interruptions, tiny half-precision gradients."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from transformers_legrad import LeGradExplainer, engine
from transformers_legrad.images import ImageReadError, load, open_image

from reference import minmax, reference_grid_maps
from test_engine import assert_same_state, explain_inputs, model_state
from test_exact import HALF_PRECISION_RAW_TOLERANCE, assert_raw_maps_match
from tiny_models import random_image

MODES = ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1", "I", "F", "RGB"]


def image_in_mode(mode, size=(40, 30)):
    base = random_image(0, size)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert image.mode == "I;16"
        return image
    return base.convert(mode)


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_gives_finite_maps(clip, mode):
    image = image_in_mode(mode)
    out = LeGradExplainer(clip.model, clip.processor).explain(images=image, text=["a cat"])
    assert torch.isfinite(out.heatmaps).all() and out.heatmaps.max() == 1.0
    results = pipeline("legrad-explanation", model=clip.path)(image, candidate_labels=["a cat"])
    assert results[0]["heatmap"].size == image.size


def test_sixteen_bit_images_are_not_clipped_to_white():
    image = image_in_mode("I;16")
    assert np.asarray(load(image)).std() > 10


def test_exif_rotation_is_applied(clip, tmp_path):
    """A JPEG stored 60x40 with orientation 6 (rotate 90) is displayed 40x60: maps follow the display."""
    stored = random_image(1, (60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif)
    assert open_image(path).size == (40, 60)
    result = pipeline("legrad-explanation", model=clip.path)(str(path), candidate_labels=["a cat"])
    assert result[0]["heatmap"].size == (40, 60)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4000, 300), (300, 4000)])
def test_extreme_sizes(clip, vit, size):
    image = random_image(2, size)
    for tiny, kwargs in ((clip, {"candidate_labels": ["a cat"]}), (vit, {"top_k": 1})):
        result = pipeline("legrad-explanation", model=tiny.path)(image, **kwargs)[0]
        assert result["heatmap"].size == size and result["overlay"].size == size


def test_very_large_image_is_bounded_by_the_processor(vit):
    image = Image.new("RGB", (10000, 10000), (120, 30, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        out = LeGradExplainer(vit.model, vit.processor).explain(images=image, targets=[0])
    assert out.heatmaps.shape == (1, 1, 48, 48) and torch.isfinite(out.heatmaps).all()


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert open_image(path).getpixel((5, 5))[0] > 200


def broken_files(folder):
    png = io.BytesIO()
    random_image(3, (64, 64)).save(png, format="PNG")
    jpeg = io.BytesIO()
    random_image(4, (64, 64)).save(jpeg, format="JPEG")
    files = {
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "truncated.jpg": jpeg.getvalue()[:300],
        "random.png": np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "text.png": b"this is a text file\n",
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def test_broken_files_give_errors_naming_them(clip, tmp_path):
    explainer = LeGradExplainer(clip.model, clip.processor)
    for path in broken_files(tmp_path):
        with pytest.raises(ImageReadError, match=path.name):
            explainer.explain(images=str(path), text=["a cat"])
    with pytest.raises(ImageReadError, match="no such file"):
        explainer.explain(images=str(tmp_path / "absent.png"), text=["a cat"])


def test_odd_prompts(clip):
    explainer = LeGradExplainer(clip.model, clip.processor)
    image = random_image(5)
    out = explainer.explain(images=image, text=["", "ünïcødé 猫 🐱", "a cat", "a cat"])
    assert torch.isfinite(out.grid_maps).all()
    torch.testing.assert_close(out.grid_maps[:, 2], out.grid_maps[:, 3])
    with pytest.warns(UserWarning, match=r"1 prompt\(s\) exceed the text model's 16 tokens"):
        long = explainer.explain(images=image, text=["a cat " * 40])
    assert torch.isfinite(long.grid_maps).all()


@pytest.mark.slow
def test_many_prompts_are_chunked_and_equal_the_unchunked_maps(clip, monkeypatch):
    explainer = LeGradExplainer(clip.model, clip.processor)
    image = random_image(6)
    prompts = [
        f"a photo of a {c} {s}"
        for c in ("red", "green", "blue", "yellow", "black")
        for s in ("circle", "square", "triangle", "star", "disc", "ring")
    ] * 17  # 510 prompts
    chunked = explainer.explain(images=image, text=prompts)
    monkeypatch.setattr(engine, "PROMPT_CHUNK_SIZE", 1024)
    whole = explainer.explain(images=image, text=prompts)
    assert chunked.grid_maps.shape == (1, 510, 6, 6)
    torch.testing.assert_close(chunked.grid_maps, whole.grid_maps, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(chunked.grid_maps[:, :30], chunked.grid_maps[:, 30:60])


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
def test_keyboard_interrupt_half_way_leaves_the_model_untouched(family, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    model = copy.deepcopy(tiny.model).train()
    explainer = LeGradExplainer(model, layers="all")
    adapter = explainer.adapter
    name = "pooling_head_attention" if adapter.explains_pooling_head else "layer_features"
    original, calls = getattr(adapter, name), []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(adapter, name, interrupt)
    before = model_state(model)
    with pytest.raises(KeyboardInterrupt):
        explainer.explain(**explain_inputs(tiny))
    assert_same_state(before, model_state(model))
    monkeypatch.undo()
    assert torch.isfinite(explainer.explain(**explain_inputs(tiny)).grid_maps).all()  # the lock was released
    model.eval()
    pixel_values = explain_inputs(tiny)["pixel_values"]
    torch.testing.assert_close(own_output(model, pixel_values), own_output(tiny.model, pixel_values))


def own_output(model, pixel_values):
    """The model's own image output: its image embedding, or its logits."""
    with torch.no_grad():
        if hasattr(model, "get_image_features"):
            return model.get_image_features(pixel_values=pixel_values).pooler_output
        return model(pixel_values=pixel_values).logits


def test_two_explainers_on_one_model(clip):
    first, second = LeGradExplainer(clip.model, layers="all"), LeGradExplainer(clip.model)
    inputs = explain_inputs(clip)
    a, b = first.explain(**inputs), second.explain(**inputs)
    assert a.explained_layers == [0, 1, 2, 3] and b.explained_layers == [2, 3]
    torch.testing.assert_close(first.explain(**inputs).grid_maps, a.grid_maps)


def test_float16_with_tiny_gradients_matches_float32(vit):
    """Gradients around 1e-7 underflow float16; the engine scales the backward and scales back."""
    model = copy.deepcopy(vit.model)
    with torch.no_grad():
        model.classifier.weight.mul_(1e-4)
        model.classifier.bias.mul_(1e-4)
    pixel_values = vit.processor(images=[random_image(0), random_image(1)], return_tensors="pt")["pixel_values"]
    full = LeGradExplainer(model, layers="all").explain(pixel_values=pixel_values, targets=[0, 3])
    half = LeGradExplainer(copy.deepcopy(model).half(), layers="all").explain(pixel_values=pixel_values, targets=[0, 3])
    assert torch.isfinite(half.grid_maps).all() and half.grid_maps.flatten(2).amax(-1).gt(0).all()
    a, b = minmax(full.grid_maps).flatten(2), minmax(half.grid_maps).flatten(2)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    assert ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).min() >= 0.99
    reference = reference_grid_maps(
        model, {"pixel_values": pixel_values}, targets=torch.tensor([[0, 3]] * 2), layers=[0, 1, 2, 3]
    )
    assert_raw_maps_match(half.grid_maps, reference, HALF_PRECISION_RAW_TOLERANCE[torch.float16])
