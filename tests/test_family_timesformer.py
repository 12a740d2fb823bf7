"""TimeSformer (`TimesformerForVideoClassification`): divided space-time attention, spatial or temporal, exactly.

Raw `grid_maps` and `layer_maps` [batch, targets, (layers,) frames, h, w] against the independent reference in
`reference_timesformer.py` (full graph, the attention probabilities the model multiplies V by, one autograd.grad
per layer and target) for each block's spatial attention (per-frame maps) and its temporal attention (the
relevance of each frame per patch position), the default and all layers, 1 and 3 targets, a batch of 2 clips,
`score="model"`, and blocks recomputed past the memory budget with prompts in several chunks; heatmaps [batch,
targets, frames, H, W] are the grid maps upsampled and normalized; `videos=` equals the processor's
`pixel_values`; clear errors for wrong inputs and options; bfloat16 close to float32; the model left as found.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from transformers_legrad import LeGradExplainer, engine
from transformers_legrad.adapters.timesformer import TimesformerClassifierAdapter

import tiny_timesformer
from reference_timesformer import layer_logits, reference_layer_maps
from test_engine import assert_same_state, model_state
from test_exact import assert_raw_maps_match, pearson
from tiny_timesformer import NUM_LAYERS
from tiny_video import FRAME_SIZE, NUM_FRAMES, clips_pixels, random_clip

ATTENTIONS = ["spatial", "temporal"]
LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
}
GRID = (NUM_FRAMES, FRAME_SIZE // 8, FRAME_SIZE // 8)


@pytest.fixture(scope="module")
def timesformer():
    return tiny_timesformer.make_timesformer()


def test_the_class_has_its_adapter(timesformer):
    explainer = LeGradExplainer(timesformer.model, timesformer.processor)
    assert type(explainer.adapter) is TimesformerClassifierAdapter
    assert explainer.adapter.spec.modality == "video"
    assert explainer.adapter.explained_attention == "spatial"
    assert LeGradExplainer(timesformer.model, attention="temporal").adapter.explained_attention == "temporal"


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("layer_case", LAYER_CASES)
@pytest.mark.parametrize("targets", [[2], [0, 4, 1]])
def test_maps_equal_the_reference(timesformer, attention, layer_case, targets):
    layers, indices = LAYER_CASES[layer_case]
    pixel_values = clips_pixels(timesformer)
    out = LeGradExplainer(timesformer.model, layers=layers, attention=attention).explain(
        pixel_values=pixel_values, targets=targets, return_layer_maps=True
    )
    reference = reference_layer_maps(
        timesformer.model, pixel_values, torch.tensor([targets, targets]), indices, attention=attention
    )
    assert out.explained_layers == indices
    assert out.grid_maps.shape == (2, len(targets), *GRID)
    assert out.grid_shapes == [GRID] * 2 and out.image_sizes == [(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)] * 2
    assert_raw_maps_match(out.layer_maps, reference)
    assert_raw_maps_match(out.grid_maps, reference.sum(dim=2))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_model_score_equals_the_reference_of_the_models_own_pooling(timesformer, attention):
    pixel_values = clips_pixels(timesformer)
    out = LeGradExplainer(timesformer.model, layers="all", score="model", attention=attention).explain(
        pixel_values=pixel_values, targets=[1, 3], return_layer_maps=True
    )
    reference = reference_layer_maps(
        timesformer.model,
        pixel_values,
        torch.tensor([[1, 3], [1, 3]]),
        list(range(NUM_LAYERS)),
        pooling="model",
        attention=attention,
    )
    assert_raw_maps_match(out.layer_maps, reference)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_recomputed_blocks_and_prompt_chunks_equal_the_reference(timesformer, attention, monkeypatch):
    """Past the memory budget every block keeps only its input and is rerun alone; prompts go 2 per backward."""
    monkeypatch.setattr(engine, "RECORDED_TAIL_MEMORY_FRACTION", 0.0)
    monkeypatch.setattr(engine, "PROMPT_CHUNK_SIZE", 2)
    pixel_values = clips_pixels(timesformer, count=3)
    targets = [3, 0, 2]
    out = LeGradExplainer(timesformer.model, layers="all", attention=attention).explain(
        pixel_values=pixel_values, targets=targets, return_layer_maps=True
    )
    reference = reference_layer_maps(
        timesformer.model, pixel_values, torch.tensor([targets] * 3), list(range(NUM_LAYERS)), attention=attention
    )
    assert_raw_maps_match(out.layer_maps, reference)


def test_the_spatial_and_temporal_maps_differ(timesformer):
    """Two attentions, two explanations: neither is the other one relabelled."""
    pixel_values = clips_pixels(timesformer)
    spatial = LeGradExplainer(timesformer.model).explain(pixel_values=pixel_values, targets=[1]).grid_maps
    temporal = LeGradExplainer(timesformer.model, attention="temporal").explain(pixel_values=pixel_values, targets=[1])
    assert pearson(spatial, temporal.grid_maps).abs().max() < 0.9
    per_frame = temporal.grid_maps.mean(dim=(-2, -1))
    assert per_frame.shape == (2, 1, NUM_FRAMES) and per_frame.gt(0).all()


def test_the_model_pooling_readout_of_the_last_block_is_the_models_logits(timesformer):
    pixel_values = clips_pixels(timesformer)
    adapter = LeGradExplainer(timesformer.model).adapter
    with torch.no_grad():
        outputs = timesformer.model(pixel_values, output_hidden_states=True)
        last = outputs.hidden_states[-1]
        ours = adapter.layer_features(last, None, "model")
        theirs = layer_logits(timesformer.model, last, "model")
    torch.testing.assert_close(ours, outputs.logits)
    torch.testing.assert_close(theirs, outputs.logits)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_heatmaps_are_the_grid_maps_upsampled_and_normalized(timesformer, attention):
    explainer = LeGradExplainer(timesformer.model, timesformer.processor, attention=attention)
    out = explainer.explain(videos=[random_clip(0), random_clip(1)], top_k=2)
    assert out.heatmaps.shape == (2, 2, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
    assert torch.isfinite(out.heatmaps).all() and out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1
    upsampled = F.interpolate(out.grid_maps, size=out.heatmaps.shape[-3:], mode="trilinear", align_corners=False)
    low = upsampled.amin(dim=(-3, -2, -1), keepdim=True)
    high = upsampled.amax(dim=(-3, -2, -1), keepdim=True)
    torch.testing.assert_close(out.heatmaps, (upsampled - low) / (high - low))


def test_videos_equal_the_processors_pixel_values(timesformer):
    explainer = LeGradExplainer(timesformer.model, timesformer.processor)
    expected = explainer.explain(pixel_values=clips_pixels(timesformer), targets=[1, 2]).grid_maps
    videos = [random_clip(0), random_clip(1)]
    torch.testing.assert_close(explainer.explain(videos=videos, targets=[1, 2]).grid_maps, expected)


def test_wrong_inputs_and_options_get_clear_errors(timesformer):
    explainer = LeGradExplainer(timesformer.model, timesformer.processor)
    with pytest.raises(ValueError, match="takes 4 frames per video"):
        explainer.explain(videos=random_clip(0, frames=2))
    with pytest.raises(ValueError, match="takes 4 frames per video"):
        explainer.explain(pixel_values=torch.randn(1, 8, 3, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(ValueError, match="frames of 32x32 pixels"):
        explainer.explain(pixel_values=torch.randn(1, NUM_FRAMES, 3, 48, 48))
    with pytest.raises(ValueError, match="one image per row"):
        explainer.explain(pixel_values=torch.randn(1, 3, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(ValueError, match="2 channels"):
        explainer.explain(pixel_values=torch.randn(1, NUM_FRAMES, 2, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(ValueError, match="`attention` must be one of 'spatial', 'temporal'"):
        LeGradExplainer(timesformer.model, attention="joint")
    with pytest.raises(TypeError, match="TimesformerClassifierAdapter takes no option 'attentions'"):
        LeGradExplainer(timesformer.model, attentions="temporal")
    joint = tiny_timesformer.make_timesformer(seed=1, attention_type="joint_space_time")
    with pytest.raises(TypeError, match="attention_type='joint_space_time' is not explained"):
        LeGradExplainer(joint.model)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_bfloat16_maps_correlate_with_float32(timesformer, attention):
    pixel_values = clips_pixels(timesformer)
    full = LeGradExplainer(timesformer.model, layers="all", attention=attention).explain(
        pixel_values=pixel_values, targets=[0, 3]
    )
    half_model = copy.deepcopy(timesformer.model).to(torch.bfloat16)
    half = LeGradExplainer(half_model, layers="all", attention=attention).explain(
        pixel_values=pixel_values, targets=[0, 3]
    )
    assert torch.isfinite(half.grid_maps).all() and half.grid_maps.flatten(2).amax(-1).gt(0).all()
    correlation = pearson(full.grid_maps, half.grid_maps)
    assert correlation.min() >= 0.99, correlation
    assert next(half_model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("score", ["legrad", "model"])
def test_the_model_is_left_untouched(timesformer, attention, score):
    model = copy.deepcopy(timesformer.model).train()
    before = model_state(model)
    explainer = LeGradExplainer(model, timesformer.processor, layers="all", score=score, attention=attention)
    explainer.explain(videos=random_clip(4), targets=[1, 2])
    assert_same_state(before, model_state(model))


def test_the_pipeline_explains_the_temporal_attention_when_asked(timesformer):
    """`attention="temporal"` given to `pipeline(...)` reaches the adapter: the pipeline's maps are the explainer's."""
    from transformers import pipeline

    frames = random_clip(3, size=(FRAME_SIZE, FRAME_SIZE))  # the processed size: the maps need no resizing
    pipe = pipeline("legrad-explanation", model=timesformer.path, attention="temporal")
    (result,) = pipe(frames, top_k=1, return_tensors=True)
    explainer = LeGradExplainer(timesformer.model, timesformer.processor, attention="temporal")
    out = explainer.explain(videos=[frames])
    assert result["label"] == out.labels_for(0)[0]
    assert torch.allclose(torch.as_tensor(result["map"]).float(), out.heatmaps[0, 0], atol=1e-5)
    spatial = pipeline("legrad-explanation", model=timesformer.path)(frames, top_k=1, return_tensors=True)[0]
    assert not torch.allclose(torch.as_tensor(spatial["map"]).float(), out.heatmaps[0, 0], atol=1e-3)
