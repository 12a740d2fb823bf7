"""Classifiers with ViT's layout and a twist: DINOv2 with registers, BEiT (relative position bias, layer scale,
mean-pooling head) and Data2VecVision (BEiT under pre-refactor module names, attention class fixed at build time).

Raw `grid_maps` and `layer_maps` against the independent reference in `reference_classifiers.py` (eager attention,
full graph, one autograd.grad per layer and target) for the default, all and an arbitrary set of layers, 1 and 3
targets, a batch of 2 images, non-square inputs and `score="model"`; registers kept out of the maps and of the
head's patch mean; bfloat16 maps close to float32; the model left as found; pipeline and CLI smoke tests.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import pipeline

from transformers_legrad import LeGradExplainer, cards, cli
from transformers_legrad.adapters import PixelInputs
from transformers_legrad.adapters.beit import BeitClassifierAdapter, Data2VecVisionClassifierAdapter
from transformers_legrad.adapters.dinov2_registers import Dinov2WithRegistersClassifierAdapter

import tiny_classifiers
from reference_classifiers import reference_layer_maps
from test_engine import assert_same_state, model_state
from test_exact import assert_raw_close, pearson
from tiny_classifiers import NUM_REGISTERS
from tiny_models import NUM_LAYERS, random_image

FAMILIES = ["dinov2_registers", "beit", "beit_cls", "data2vec_vision"]
LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "arbitrary": ([0, 2], [0, 2]),
}
ADAPTERS = {
    "dinov2_registers": Dinov2WithRegistersClassifierAdapter,
    "beit": BeitClassifierAdapter,
    "beit_cls": BeitClassifierAdapter,
    "data2vec_vision": Data2VecVisionClassifierAdapter,
}


@pytest.fixture(scope="session")
def dinov2_registers():
    return tiny_classifiers.make_dinov2_registers()


@pytest.fixture(scope="session")
def beit():
    return tiny_classifiers.make_beit()


@pytest.fixture(scope="session")
def beit_cls():
    return tiny_classifiers.make_beit_cls()


@pytest.fixture(scope="session")
def data2vec_vision():
    return tiny_classifiers.make_data2vec_vision()


def processed(tiny, count: int = 2) -> torch.Tensor:
    """The processor's pixel values [count, 3, 48, 48] for random images."""
    images = [random_image(seed) for seed in range(count)]
    return tiny.processor(images=images, return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_class_has_its_adapter(family, request):
    tiny = request.getfixturevalue(family)
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    assert type(explainer.adapter) is ADAPTERS[family]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("targets", [[3], [0, 4, 1]])
def test_maps_equal_the_reference(family, layer_case, targets, request):
    tiny = request.getfixturevalue(family)
    layers, indices = LAYER_CASES[layer_case]
    pixel_values = processed(tiny)
    out = LeGradExplainer(tiny.model, layers=layers).explain(
        pixel_values=pixel_values, targets=targets, return_layer_maps=True
    )
    target_ids = torch.tensor([targets, targets])
    assert out.explained_layers == indices and torch.equal(out.target_ids, target_ids)
    reference = reference_layer_maps(tiny.model, pixel_values, target_ids, indices)
    assert_raw_close(out.layer_maps, reference)
    assert_raw_close(out.grid_maps, reference.sum(dim=2))


@pytest.mark.parametrize("family", FAMILIES)
def test_model_score_equals_the_reference_of_the_models_own_pooling(family, request):
    """BEiT's own head averages the patch tokens only: not a token mean, so no shortcut through the MLP.

    Taking the shortcut anyway would be off by about 1/N of the MLP branch's share (2e-4 of the map's maximum
    here, mean pooling): the comparison is 10x tighter than elsewhere to see it (float32 agrees to 1e-6).
    """
    tiny = request.getfixturevalue(family)
    pixel_values = processed(tiny)
    targets = torch.tensor([[1, 3, 0], [2, 4, 1]])
    out = LeGradExplainer(tiny.model, layers="all", score="model").explain(
        pixel_values=pixel_values, targets=targets, return_layer_maps=True
    )
    reference = reference_layer_maps(tiny.model, pixel_values, targets, list(range(NUM_LAYERS)), pooling="model")
    assert_raw_close(out.layer_maps, reference, tolerance=1e-5)
    legrad = reference_layer_maps(tiny.model, pixel_values, targets, list(range(NUM_LAYERS)))
    assert not torch.allclose(legrad, reference, rtol=1e-2), "both scores give one map: a weak test case"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_pooling_readout_of_the_last_block_is_the_models_logits(family, request):
    """The head as the adapter recomputes it: with registers, the patch mean leaves them out, as the model's does."""
    tiny = request.getfixturevalue(family)
    pixel_values = processed(tiny)
    explainer = LeGradExplainer(tiny.model)
    adapter = explainer.adapter
    kept = {}
    handle = adapter.blocks[-1].register_forward_hook(lambda module, args, output: kept.update(tokens=output))
    try:
        with torch.no_grad():
            logits = tiny.model(pixel_values=pixel_values).logits
    finally:
        handle.remove()
    tokens = kept["tokens"][0] if isinstance(kept["tokens"], tuple) else kept["tokens"]
    pixels = PixelInputs({"pixel_values": pixel_values}, [(6, 6)] * 2, [(48, 48)] * 2)
    with torch.no_grad():
        torch.testing.assert_close(adapter.layer_features(tokens, pixels, "model"), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("height, width", [(48, 32), (40, 64)])
def test_non_square_inputs_equal_the_reference(family, height, width, request):
    """Positions (absolute and relative bias tables) are interpolated; the grid follows h x w."""
    tiny = request.getfixturevalue(family)
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    targets = torch.tensor([[1, 2], [1, 2]])
    out = LeGradExplainer(tiny.model, layers="all").explain(pixel_values=pixel_values, targets=[1, 2])
    assert out.grid_maps.shape[-2:] == (height // 8, width // 8)
    assert out.heatmaps.shape[-2:] == (height, width)
    reference = reference_layer_maps(tiny.model, pixel_values, targets, list(range(NUM_LAYERS)))
    assert_raw_close(out.grid_maps, reference.sum(dim=2))


def test_registers_are_never_part_of_a_map(dinov2_registers, monkeypatch):
    model = dinov2_registers.model
    assert model.config.num_register_tokens == NUM_REGISTERS
    pixel_values = processed(dinov2_registers)
    explainer = LeGradExplainer(model, layers="all")
    assert explainer.adapter.num_prefix_tokens == 1 + NUM_REGISTERS
    out = explainer.explain(pixel_values=pixel_values, targets=[2], return_layer_maps=True)
    assert out.grid_shapes == [(6, 6), (6, 6)] and out.grid_maps.shape == (2, 1, 6, 6)
    assert out.layer_maps.shape == (2, 1, NUM_LAYERS, 6, 6)
    reference = reference_layer_maps(model, pixel_values, torch.tensor([[2], [2]]), list(range(NUM_LAYERS)))
    assert_raw_close(out.layer_maps, reference)
    # Registers counted as patches (only CLS dropped): the same check then fails.
    monkeypatch.setattr(Dinov2WithRegistersClassifierAdapter, "num_prefix_tokens", property(lambda self: 1))
    wrong = LeGradExplainer(model, layers="all").explain(pixel_values=pixel_values, targets=[2])
    with pytest.raises(AssertionError):
        assert_raw_close(wrong.grid_maps, reference.sum(dim=2))


@pytest.mark.parametrize("family", ["dinov2_registers", "beit", "data2vec_vision"])
def test_bfloat16_maps_correlate_with_float32(family, request):
    tiny = request.getfixturevalue(family)
    pictures = [random_image(seed) for seed in range(2)]
    full = LeGradExplainer(tiny.model, tiny.processor, layers="all").explain(images=pictures, targets=[0, 3])
    half_model = copy.deepcopy(tiny.model).to(torch.bfloat16)
    half = LeGradExplainer(half_model, tiny.processor, layers="all").explain(images=pictures, targets=[0, 3])
    assert torch.isfinite(half.grid_maps).all() and half.grid_maps.flatten(2).amax(-1).gt(0).all()
    correlation = pearson(full.grid_maps, half.grid_maps)
    assert correlation.min() >= 0.99, correlation
    assert next(half_model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("score", ["legrad", "model"])
def test_the_model_is_left_untouched(family, score, request):
    tiny = request.getfixturevalue(family)
    model = copy.deepcopy(tiny.model).train()
    before = model_state(model)
    LeGradExplainer(model, tiny.processor, layers="all", score=score).explain(images=random_image(4), targets=[1, 2])
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("family", ["dinov2_registers", "beit", "data2vec_vision"])
def test_label_names_and_top_k(family, request):
    tiny = request.getfixturevalue(family)
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    image = random_image(5)
    named = explainer.explain(images=image, targets=["frog", "cat"])
    assert named.labels == ["frog", "cat"] and named.target_ids.tolist() == [[4, 0]]
    with torch.no_grad():
        logits = tiny.model(pixel_values=tiny.processor(images=image, return_tensors="pt")["pixel_values"]).logits
    top = explainer.explain(images=image, top_k=3)
    assert top.target_ids.tolist() == [logits[0].topk(3).indices.tolist()]
    torch.testing.assert_close(top.scores, logits[:, top.target_ids[0]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["dinov2_registers", "beit", "data2vec_vision"])
def test_pipeline_top_k(family, request):
    tiny = request.getfixturevalue(family)
    explain = pipeline("legrad-explanation", model=tiny.path)
    assert type(explain.model) is type(tiny.model)
    image = random_image(6, (64, 40))
    results = explain(image, top_k=2)
    with torch.no_grad():
        pixel_values = tiny.processor(images=image, return_tensors="pt")["pixel_values"]
        expected = tiny.model(pixel_values=pixel_values).logits.softmax(-1)[0].topk(2)
    assert [entry["label"] for entry in results] == [tiny.model.config.id2label[int(i)] for i in expected.indices]
    torch.testing.assert_close(torch.tensor([entry["score"] for entry in results]), expected.values)
    assert all(entry["heatmap"].size == image.size for entry in results)


@pytest.mark.parametrize("family", ["dinov2_registers", "beit", "data2vec_vision"])
def test_cli_top_k(family, request, tmp_path, capsys):
    tiny = request.getfixturevalue(family)
    image = tmp_path / "image.png"
    random_image(7).save(image)
    out = tmp_path / "out"
    assert cli.main(["explain", str(image), "--model", tiny.path, "--top-k", "2", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and {record["label"] for record in records} <= set(tiny.model.config.id2label.values())
    capsys.readouterr()


@pytest.mark.parametrize(
    "model_id, model_class",
    [
        ("microsoft/beit-base-patch16-224", "BeitForImageClassification"),
        ("facebook/data2vec-vision-base-ft1k", "Data2VecVisionForImageClassification"),
    ],
)
def test_checkpoints_are_carded(model_id, model_class):
    assert cards.CARD_MODELS[model_id].model_class == model_class
    card = cards.render_card(model_id)
    assert "pipeline_tag: image-classification" in card and f"{model_class}.from_pretrained" in card
