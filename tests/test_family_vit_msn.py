"""ViT-MSN classifiers (`ViTMSNForImageClassification`): ViT's layout and head, explained like ViT.

ViT-MSN and ViT classifiers compute the same function of the same weights (same module names), so the tiny ViT-MSN
here carries the weights of the tiny ViT of `tiny_models`, the model's own logits are checked to be equal, and its
raw maps are checked against the straightforward reference computed on that ViT.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTMSNConfig, pipeline

from transformers_legrad import LeGradExplainer

from reference import reference_grid_maps
from test_exact import assert_raw_close
from tiny_models import CLASSIFIER, NUM_LAYERS, make_vit, random_image

LAYER_CASES = [(None, [NUM_LAYERS - 2, NUM_LAYERS - 1]), ("all", list(range(NUM_LAYERS))), ([0, 2], [0, 2])]


@pytest.fixture(scope="module")
def msn(tmp_path_factory):
    """(ViT-MSN loaded back from its folder with its processor, the ViT with the same weights, the folder)."""
    from transformers import ViTMSNForImageClassification

    vit = make_vit()
    # ViT-MSN's default LayerNorm eps (1e-6) is not ViT's (1e-12): the same function needs the same eps.
    config = ViTMSNConfig(**CLASSIFIER, layer_norm_eps=vit.model.config.layer_norm_eps)
    model = ViTMSNForImageClassification(config).eval()
    model.load_state_dict(vit.model.state_dict(), strict=True)
    folder = tmp_path_factory.mktemp("vit-msn")
    model.save_pretrained(folder)
    vit.processor.save_pretrained(folder)
    loaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(loaded).__name__ == "ViTMSNForImageClassification"
    return loaded, AutoImageProcessor.from_pretrained(folder), vit.model, folder


@pytest.mark.parametrize("layers, indices", LAYER_CASES)
@pytest.mark.parametrize("targets", [[3], [[1, 3, 0], [4, 2, 1]]])
def test_raw_maps_equal_the_reference(msn, layers, indices, targets):
    model, processor, vit, _ = msn
    pixels = processor(images=[random_image(0), random_image(1)], return_tensors="pt")["pixel_values"]
    target_ids = torch.tensor(targets if isinstance(targets[0], list) else [targets] * 2)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).logits, vit(pixel_values=pixels).logits)
    given = target_ids if isinstance(targets[0], list) else targets  # per-image ids go as a tensor
    out = LeGradExplainer(model, layers=layers).explain(pixel_values=pixels, targets=given, return_layer_maps=True)
    assert_raw_close(
        out.grid_maps, reference_grid_maps(vit, {"pixel_values": pixels}, targets=target_ids, layers=indices)
    )
    for position, index in enumerate(indices):
        expected = reference_grid_maps(vit, {"pixel_values": pixels}, targets=target_ids, layers=[index])
        assert_raw_close(out.layer_maps[:, :, position], expected)
    assert out.explained_layers == indices


def test_non_square_input_and_labels(msn):
    model, _, vit, _ = msn
    pixels = torch.randn(1, 3, 40, 64, generator=torch.Generator().manual_seed(0))
    out = LeGradExplainer(model).explain(pixel_values=pixels, top_k=2)
    expected = reference_grid_maps(vit, {"pixel_values": pixels}, targets=out.target_ids, layers=[2, 3])
    assert out.grid_maps.shape == (1, 2, 5, 8)
    assert_raw_close(out.grid_maps, expected)
    assert out.labels == [CLASSIFIER["id2label"][int(i)] for i in out.target_ids[0]]


def test_pipeline_serves_it(msn):
    results = pipeline("legrad-explanation", model=str(msn[3]))(random_image(4, (60, 40)), top_k=2)
    assert len(results) == 2 and results[0]["heatmap"].size == (60, 40)
    assert results[0]["score"] >= results[1]["score"]


def test_a_checkpoint_without_the_head_warns_that_the_head_is_new(tmp_path):
    """A `ViTMSNModel` checkpoint (as the published ViT-MSN ones are) loads through the classification Auto class
    with a random head: the pipeline says so instead of explaining untrained logits silently."""
    from transformers import ViTImageProcessorPil, ViTMSNModel

    ViTMSNModel(ViTMSNConfig(**CLASSIFIER)).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={"height": 48, "width": 48}).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="saved as ViTMSNModel but loads as ViTMSNForImageClassification"):
        pipeline("legrad-explanation", model=str(tmp_path))


def test_a_checkpoint_with_its_head_loads_without_a_warning(msn, recwarn):
    pipeline("legrad-explanation", model=str(msn[3]))
    assert not [warning for warning in recwarn if "newly initialized" in str(warning.message)]
