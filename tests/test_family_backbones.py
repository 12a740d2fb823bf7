"""Backbones explained along a direction (CLIPVisionModel, SiglipVisionModel with/without head, ViTModel, Dinov2Model,
Dinov2WithRegistersModel, DINOv3ViTModel): exact maps against an independent reference, reference images, errors,
the pipeline and the CLI."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPModel, Dinov2Model, pipeline

from transformers_legrad import LeGradExplainer, cards
from transformers_legrad.adapters import registry
from transformers_legrad.cli import main

from reference_backbones import pooled_embedding, reference_grid_maps
from test_engine import assert_same_state, model_state
from test_exact import assert_raw_close
from tiny_backbones import BACKBONES, make_backbone
from tiny_models import NUM_LAYERS, random_image

NAMES = list(BACKBONES)
LAYERS = {
    "last-2": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "0,2": ([0, 2], [0, 2]),
}


@functools.cache
def tiny(name: str):
    return make_backbone(name)


def images(count: int = 2):
    return [random_image(seed, (48, 48)) for seed in range(count)]


def pixel_values(name: str, pictures) -> torch.Tensor:
    return tiny(name).processor(images=pictures, return_tensors="pt")["pixel_values"]


def random_directions(name: str, count: int) -> torch.Tensor:
    dim = tiny(name).model.config.hidden_size
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(count))


# --- exact maps ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("layers", list(LAYERS))
@pytest.mark.parametrize("name", NAMES)
def test_grid_maps_equal_the_reference(name, layers, count):
    spec, indices = LAYERS[layers]
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor, layers=spec)
    directions = random_directions(name, count)
    out = explainer.explain(images=images(), directions=directions)
    ref = reference_grid_maps(tiny(name).model, pixel_values(name, images()), directions, indices)
    assert out.grid_maps.shape == (2, count, 6, 6) and out.explained_layers == indices
    assert out.labels == [f"direction {k}" for k in range(count)]
    assert_raw_close(out.grid_maps, ref)


@pytest.mark.parametrize("name", NAMES)
def test_model_score_and_final_scores_equal_the_reference(name):
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor, layers="all", score="model")
    directions = random_directions(name, 3)
    out = explainer.explain(images=images(), directions=directions, return_layer_maps=True)
    pixels = pixel_values(name, images())
    ref = reference_grid_maps(tiny(name).model, pixels, directions, list(range(NUM_LAYERS)), score="model")
    assert_raw_close(out.grid_maps, ref)
    torch.testing.assert_close(out.layer_maps.sum(dim=2), out.grid_maps)
    cosine = pooled_embedding(tiny(name).model, pixels) @ F.normalize(directions, dim=-1).T
    torch.testing.assert_close(out.scores, cosine, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.probabilities, out.scores)  # no softmax over directions


@pytest.mark.parametrize("name", NAMES)
def test_a_reference_image_points_at_itself(name):
    model, processor = tiny(name).model, tiny(name).processor
    explainer = LeGradExplainer(model, processor)
    query, other = images()
    out = explainer.explain(images=[query, other], reference_images=[query, other], labels=["query", "other"])
    assert out.labels == ["query", "other"]
    torch.testing.assert_close(out.scores.diagonal(), torch.ones(2), rtol=0, atol=1e-5)  # the maximum cosine
    assert bool((out.scores <= 1 + 1e-5).all())
    own = pooled_embedding(model, pixel_values(name, [query, other]))
    along_own = explainer.explain(images=[query, other], directions=own)
    torch.testing.assert_close(out.grid_maps, along_own.grid_maps)
    torch.testing.assert_close(out.scores, along_own.scores)
    default = explainer.explain(images=query, reference_images=other)
    assert default.labels == ["reference 0"]


@pytest.mark.parametrize("name", ["dinov2", "siglip_vision"])
def test_the_model_is_left_untouched(name):
    model = tiny(name).model
    before = model_state(model)
    LeGradExplainer(model, tiny(name).processor, layers="all").explain(
        images=images(), reference_images=images(1), return_layer_maps=True
    )
    assert_same_state(before, model_state(model))


# --- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"directions": torch.randn(2, 7)}, ValueError, r"\[K, 32\] for this Dinov2Model \(its pooled feature width\)"),
        ({"directions": torch.zeros(2, 32)}, ValueError, r"rows \[0, 1\] have zero norm"),
        ({"directions": torch.full((1, 32), float("nan"))}, ValueError, "NaN or inf"),
        ({"directions": torch.randn(0, 32)}, ValueError, "holds no direction"),
        ({"directions": [[1.0] * 32]}, TypeError, "must be a torch.Tensor"),
        (
            {"directions": torch.randn(1, 32), "reference_images": [random_image(1)]},
            ValueError,
            "exactly one.*not both",
        ),
        ({}, ValueError, "pass exactly one of `directions`"),
        ({"text": ["a cat"]}, ValueError, "backbone: it has no text tower.*cannot explain text"),
        ({"text_embeds": torch.randn(1, 32)}, ValueError, "cannot explain text"),
        ({"targets": [0]}, ValueError, "`targets` and `top_k` are for image classifiers"),
        ({"directions": torch.randn(2, 32), "labels": ["one"]}, ValueError, "`labels` must be 2 strings"),
        ({"reference_images": torch.rand(1, 3, 48, 48)}, TypeError, "for feature vectors pass `directions=`"),
        ({"reference_images": []}, ValueError, "`reference_images` is an empty list"),
        ({"directions": torch.randn(1, 32), "correction": True}, ValueError, "null-prompt correction"),
    ],
)
def test_bad_directions_are_refused_before_any_forward(kwargs, error, message):
    explainer = LeGradExplainer(tiny("dinov2").model, tiny("dinov2").processor)
    with pytest.raises(error, match=message):
        explainer.explain(images=random_image(0), **kwargs)


def test_directions_are_for_backbones_only(clip, vit):
    for model in (clip, vit):
        explainer = LeGradExplainer(model.model, model.processor)
        with pytest.raises(ValueError, match="are for backbones"):
            explainer.explain(images=random_image(0), directions=torch.randn(1, 16))
        with pytest.raises(ValueError, match="are for backbones"):
            explainer.reference_directions(random_image(0))


# --- registry, cards -------------------------------------------------------------------------------------------
def test_backbones_load_last_and_render_a_card():
    assert registry.auto_classes()[0] == "AutoModelForZeroShotImageClassification"
    assert registry.auto_classes()[-1] == "AutoModel"
    config = tiny("dinov2").model.config
    card = cards.render_card("someone/dinov2-tiny", config=config)
    assert "pipeline_tag: image-feature-extraction" in card and "`Dinov2Model`" in card
    assert "reference_images=" in card and "--reference" in card and "candidate_labels" not in card
    card = cards.render_card("someone/clip-vision-tiny", config=tiny("clip_vision").model.config)
    assert "CLIP vision tower" in card


# --- pipeline and CLI ------------------------------------------------------------------------------------------
def test_pipeline_loads_a_backbone_as_itself_and_explains_references_and_directions(clip):
    pipe = pipeline("legrad-explanation", model=tiny("dinov2").path)
    assert type(pipe.model) is Dinov2Model  # not Dinov2ForImageClassification with an untrained head
    assert type(pipeline("legrad-explanation", model=clip.path).model) is CLIPModel
    query, other = images()
    results = pipe([query, other], reference_images=[query], labels=["me"])
    assert [[entry["label"] for entry in result] for result in results] == [["me"], ["me"]]
    assert results[0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert results[0][0]["heatmap"].size == query.size
    directions = random_directions("dinov2", 2)
    results = pipe(query, directions=directions, batch_size=1)
    assert sorted(entry["label"] for entry in results) == ["direction 0", "direction 1"]
    expected = LeGradExplainer(tiny("dinov2").model, tiny("dinov2").processor).explain(
        images=query, directions=directions
    )
    assert sorted(entry["score"] for entry in results) == pytest.approx(sorted(expected.scores[0].tolist()), abs=1e-5)
    with pytest.raises(ValueError, match="not candidate_labels"):
        pipe(query, candidate_labels=["a cat"])
    with pytest.raises(ValueError, match="not both"):
        pipe(query, directions=directions, reference_images=[other])


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_explains_along_references_and_directions(tmp_path, capsys):
    path = tiny("dinov2").path
    for index, picture in enumerate(images()):
        picture.save(tmp_path / f"image{index}.png")
    code, out, err = run(
        [
            "explain",
            tmp_path / "image0.png",
            "--model",
            path,
            "--reference",
            tmp_path / "image1.png",
            "--out",
            tmp_path / "a",
        ],
        capsys,
    )
    assert code == 0, err
    records = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [record["label"] for record in records] == ["image1"]
    directions_file = tmp_path / "probe.safetensors"
    save_file({"directions": random_directions("dinov2", 2)}, directions_file, metadata={"labels": '["cat", "dog"]'})
    code, out, err = run(
        ["explain", tmp_path / "image0.png", "--model", path, "--directions", directions_file, "--out", tmp_path / "b"],
        capsys,
    )
    assert code == 0, err
    records = json.loads((tmp_path / "b" / "results.json").read_text())
    assert sorted(record["label"] for record in records) == ["cat", "dog"]
    assert (tmp_path / "b" / records[0]["overlay"]).is_file()


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ({"probe": torch.randn(2, 32)}, None, "no tensor named 'directions' \\(it holds: probe\\)"),
        ({"directions": torch.randn(2, 7)}, None, r"must be \[K, 32\]"),
        ({"directions": torch.randn(2, 32)}, {"labels": "not json"}, "'labels' metadata is not JSON"),
        (b"not a safetensors file", None, "not a readable safetensors file"),
        (None, None, "not a readable safetensors file"),
        ("both", None, "not both"),
        ("neither", None, "give --reference IMAGE"),
        ("prompt", None, "is a backbone.*not --prompt"),
    ],
)
def test_cli_errors_for_directions(tmp_path, capsys, content, extra, message):
    image = tmp_path / "image.png"
    random_image(0).save(image)
    file = tmp_path / "directions.safetensors"
    argv = ["explain", image, "--model", tiny("dinov2").path, "--out", tmp_path / "out"]
    if isinstance(content, dict):
        save_file(content, file, metadata=extra)
        argv += ["--directions", file]
    elif isinstance(content, bytes):
        file.write_bytes(content)
        argv += ["--directions", file]
    elif content is None:
        argv += ["--directions", tmp_path / "missing.safetensors"]
    elif content == "both":
        argv += ["--directions", file, "--reference", image]
    elif content == "prompt":
        argv += ["--prompt", "a cat"]
    code, _, err = run(argv, capsys)
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(message, err), err


def test_cli_refuses_directions_for_other_models(clip, tmp_path, capsys):
    image = tmp_path / "image.png"
    random_image(0).save(image)
    code, _, err = run(["explain", image, "--model", clip.path, "--reference", image, "--out", tmp_path / "o"], capsys)
    assert code != 0 and "are for backbones" in err


def test_cli_dataset_refuses_backbones(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    random_image(0).save(data / "image.png")
    model = tiny("dinov2").path
    code, _, err = run(["explain", "--dataset", data, "--model", model, "--out", tmp_path / "o"], capsys)
    assert code != 0 and "--dataset takes prompts or classes" in err and "Traceback" not in err
    code, _, err = run(["explain", "--dataset", data, "--model", model, "--reference", data, "--out", tmp_path], capsys)
    assert code != 0 and "not a --dataset" in err


def test_benchmark_refuses_backbones_before_running(tmp_path, capsys):
    code, _, err = run(["benchmark", "--model", tiny("dinov2").path, "--json", tmp_path / "r.json"], capsys)
    assert code == 2 and "is a backbone" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_pipeline_takes_reference_images_given_as_none():
    pipe = pipeline("legrad-explanation", model=tiny("dinov2").path)
    query, _ = images()
    results = pipe(query, directions=random_directions("dinov2", 1), reference_images=None)
    assert [entry["label"] for entry in results] == ["direction 0"]
