"""Exact maps: `grid_maps` and `layer_maps` against the independent straightforward implementation in `reference.py`.

Every map is compared twice: raw (each map divided by the reference map's largest value, which keeps a wrong scale
visible) and after min-max normalization (which does not). Every family, float32, tiny random models: the default
layers (last 2), all layers and an arbitrary set; 1 and 3 prompts or targets; a batch of 2 images; non-square inputs
through `interpolate_pos_encoding`; SigLIP's correction on and off; SigLIP 2 NaFlex batches whose images have
different grids.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transformers_legrad import LeGradExplainer
from transformers_legrad import explainer as explainer_module

from reference import minmax, reference_grid_maps
from tiny_models import NUM_LAYERS, random_image

TOLERANCE = 1e-4  # max abs difference after min-max normalization
RAW_TOLERANCE = 1e-5  # max abs difference of raw maps, relative to each reference map's max (float32: ~5e-7)
# The same for a half-precision copy of the model against the float32 reference; measured on the tiny models:
# float16 up to 2e-3 (5e-3 with gradients near float16's underflow), bfloat16 up to 1.4e-2. A 1.5x scale gives 0.5.
HALF_PRECISION_RAW_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
DUAL_ENCODERS = ["clip", "clip_vision_projection", "siglip", "siglip2"]
CLASSIFIERS = ["vit", "deit", "deit_teacher", "dinov2"]
LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "arbitrary": ([0, 2], [0, 2]),
    "negative": ([-4, -1], [0, NUM_LAYERS - 1]),
}


def image_processor(tiny):
    return getattr(tiny.processor, "image_processor", None) or tiny.processor


def pixel_inputs(tiny, sizes):
    """Processor outputs for random images of the given (width, height) sizes, as a dict of tensors."""
    images = [random_image(seed, size) for seed, size in enumerate(sizes)]
    processed = image_processor(tiny)(images=images, return_tensors="pt")
    return {key: value for key, value in processed.items() if isinstance(value, torch.Tensor)}


def explain_kwargs(pixels):
    """`explain` keywords for a processor output (SigLIP 2 adds its mask and grid shapes)."""
    return {key: pixels[key] for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes") if key in pixels}


def random_embeds(count, dim, seed):
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))


def embedding_dim(model):
    config = model.config
    return getattr(config, "projection_dim", None) or config.vision_config.hidden_size


def valid_grid(shapes, like):
    valid = torch.zeros_like(like, dtype=torch.bool)
    for b, (h, w) in enumerate(shapes):
        valid[b, ..., :h, :w] = True
    return valid


def assert_min_max_maps_match(ours, reference, shapes=None):
    """Maps equal after per-map min-max normalization (over each image's own grid when `shapes` is given)."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert torch.isfinite(ours).all()
    valid = None if shapes is None else valid_grid(shapes, reference)
    difference = (minmax(ours, valid) - minmax(reference, valid)).abs().max().item()
    assert difference <= TOLERANCE, f"max abs difference after min-max {difference:.2e}"
    assert reference.abs().sum() > 0, "the reference map is all zero: the comparison would prove nothing"


def assert_raw_maps_match(ours, reference, tolerance=RAW_TOLERANCE):
    """Raw maps [..., h, w] equal within `tolerance` of each reference map's largest absolute value.

    Unlike min-max normalization this sees the maps' scale: 1.5x the reference differs by 0.5 at its maximum.
    """
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert torch.isfinite(ours).all()
    scale = reference.abs().amax(dim=(-2, -1), keepdim=True)
    assert (scale > 0).any(), "every reference map is all zero: the comparison would prove nothing"
    scale = torch.where(scale > 0, scale, 1.0)
    torch.testing.assert_close(
        ours.float() / scale, reference.float() / scale, rtol=0, atol=tolerance, msg=lambda m: f"raw maps: {m}"
    )


def assert_raw_close(ours: torch.Tensor, reference: torch.Tensor, tolerance: float = 1e-3) -> None:
    """Raw values equal within `tolerance`, relative and of the reference's largest absolute value: the family
    tests' comparison of maps and relevance with their reference implementations."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert reference.abs().max() > 0, "the reference is all zero: the comparison would prove nothing"
    torch.testing.assert_close(ours, reference, rtol=tolerance, atol=tolerance * float(reference.abs().max()))


def assert_heatmaps_are_normalized_grid_maps(heatmaps, grid_maps):
    """Each heatmap [B, K, H, W] is its grid map upsampled bilinearly and min-max normalized (one size per batch).

    Returns the bool [B, K] of the maps that are not constant: those reach 0 and 1 exactly, the others are all 0.
    """
    upsampled = F.interpolate(grid_maps.float(), size=heatmaps.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(heatmaps, minmax(upsampled))
    varies = upsampled.amax(dim=(-2, -1)) > upsampled.amin(dim=(-2, -1))
    assert heatmaps.amax(dim=(-2, -1))[varies].eq(1).all() and heatmaps.amin(dim=(-2, -1))[varies].eq(0).all()
    assert heatmaps[~varies].eq(0).all()
    return varies


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-map Pearson correlation of [batch, maps, ...] maps (float64)."""
    a, b = a.flatten(2).double(), b.flatten(2).double()
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def placed_at_patch_centres(grid_maps, size, geometry):
    """The reference of a placed heatmap: [B, K, *grid] -> [B, K, *size] min-max normalized, each axis interpolated
    with `np.interp` between the patch centres `stride * i + (patch - 1) / 2` (held constant beyond the ends)."""
    values = grid_maps.double().numpy()
    for axis, ((stride, patch), length) in enumerate(zip(geometry, size, strict=True)):
        centres = stride * np.arange(values.shape[2 + axis]) + (patch - 1) / 2
        interpolate = lambda line, centres=centres, length=length: np.interp(np.arange(length), centres, line)  # noqa: E731
        values = np.apply_along_axis(interpolate, 2 + axis, values)
    flat = values.reshape(*values.shape[:2], -1)
    low, high = flat.min(-1, keepdims=True), flat.max(-1, keepdims=True)
    normalized = np.where(high > low, (flat - low) / np.where(high > low, high - low, 1), 0)
    return torch.from_numpy(normalized.reshape(values.shape)).float()


def assert_maps_match(ours, reference, shapes=None):
    """Maps equal raw and after min-max normalization (float32 tolerances)."""
    assert_raw_maps_match(ours, reference)
    assert_min_max_maps_match(ours, reference, shapes)


@pytest.mark.parametrize("family", DUAL_ENCODERS)
@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("num_prompts", [1, 3])
def test_dual_encoder_maps_match_reference(family, layer_case, num_prompts, request):
    tiny = request.getfixturevalue(family)
    layers, indices = LAYER_CASES[layer_case]
    sizes = [(48, 48), (48, 48)] if family != "siglip2" else [(48, 48), (64, 40)]
    pixels = pixel_inputs(tiny, sizes)
    text_embeds = random_embeds(num_prompts, embedding_dim(tiny.model), seed=num_prompts)
    out = LeGradExplainer(tiny.model, layers=layers).explain(
        **explain_kwargs(pixels),
        text_embeds=text_embeds,
        correction=False if "siglip" in family else None,
        return_layer_maps=True,
    )
    reference = reference_grid_maps(tiny.model, pixels, text_embeds=text_embeds, layers=indices)
    assert out.explained_layers == indices
    shapes = out.grid_shapes if family == "siglip2" else None
    assert_maps_match(out.grid_maps, reference, shapes)
    for position, layer in enumerate(indices):
        alone = reference_grid_maps(tiny.model, pixels, text_embeds=text_embeds, layers=[layer])
        assert_maps_match(out.layer_maps[:, :, position], alone, shapes)


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
@pytest.mark.parametrize("layers, indices", [(None, [2, 3]), ("all", [0, 1, 2, 3])])
def test_siglip_correction_matches_reference(family, layers, indices, request):
    tiny = request.getfixturevalue(family)
    pixels = pixel_inputs(tiny, [(48, 48), (56, 40)])
    dim = embedding_dim(tiny.model)
    text_embeds, null = random_embeds(3, dim, seed=1), random_embeds(1, dim, seed=2)
    out = LeGradExplainer(tiny.model, layers=layers).explain(
        **explain_kwargs(pixels), text_embeds=text_embeds, null_text_embeds=null
    )
    reference = reference_grid_maps(
        tiny.model, pixels, text_embeds=text_embeds, layers=indices, correction=True, null_text_embeds=null
    )
    uncorrected = reference_grid_maps(tiny.model, pixels, text_embeds=text_embeds, layers=indices)
    assert ((reference == 0) & (uncorrected != 0)).any(), "the correction zeroed nothing: a weak test case"
    assert_maps_match(out.grid_maps, reference, out.grid_shapes)


@pytest.mark.parametrize("family", CLASSIFIERS)
@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("targets", [[3], [0, 4, 1]])
def test_classifier_maps_match_reference(family, layer_case, targets, request):
    tiny = request.getfixturevalue(family)
    layers, indices = LAYER_CASES[layer_case]
    pixels = pixel_inputs(tiny, [(48, 48), (48, 48)])
    out = LeGradExplainer(tiny.model, layers=layers).explain(
        pixel_values=pixels["pixel_values"], targets=targets, return_layer_maps=True
    )
    target_ids = torch.tensor([targets, targets])
    assert torch.equal(out.target_ids, target_ids)
    reference = reference_grid_maps(tiny.model, pixels, targets=target_ids, layers=indices)
    assert_maps_match(out.grid_maps, reference)
    for position, layer in enumerate(indices):
        alone = reference_grid_maps(tiny.model, pixels, targets=target_ids, layers=[layer])
        assert_maps_match(out.layer_maps[:, :, position], alone)


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_classifier_default_target_is_each_images_top1(family, request):
    tiny = request.getfixturevalue(family)
    pixels = pixel_inputs(tiny, [(48, 48), (48, 48), (48, 48)])
    with torch.no_grad():
        logits = tiny.model(pixel_values=pixels["pixel_values"]).logits
    out = LeGradExplainer(tiny.model).explain(pixel_values=pixels["pixel_values"])
    top1 = logits.argmax(dim=-1, keepdim=True)
    assert torch.equal(out.target_ids, top1)
    torch.testing.assert_close(out.scores, logits.gather(1, top1), rtol=1e-5, atol=1e-5)
    reference = reference_grid_maps(tiny.model, pixels, targets=top1, layers=[NUM_LAYERS - 2, NUM_LAYERS - 1])
    assert_maps_match(out.grid_maps, reference)


@pytest.mark.parametrize("family", ["clip", "siglip", "vit", "deit_teacher", "dinov2"])
@pytest.mark.parametrize("height, width", [(48, 32), (40, 64)])
def test_non_square_pixel_values_match_reference(family, height, width, request):
    """A size other than the native 48x48 goes through `interpolate_pos_encoding`; the grid follows h x w."""
    tiny = request.getfixturevalue(family)
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    pixels = {"pixel_values": pixel_values}
    explainer = LeGradExplainer(tiny.model, layers="all")
    if tiny.model.config.model_type in ("clip", "siglip"):
        text_embeds = random_embeds(3, embedding_dim(tiny.model), seed=5)
        kwargs = {"text_embeds": text_embeds}
        if family == "siglip":
            kwargs["correction"] = False
        reference = reference_grid_maps(tiny.model, pixels, text_embeds=text_embeds, layers=[0, 1, 2, 3])
    else:
        kwargs = {"targets": [1, 2]}
        reference = reference_grid_maps(tiny.model, pixels, targets=torch.tensor([[1, 2]] * 2), layers=[0, 1, 2, 3])
    out = explainer.explain(pixel_values=pixel_values, **kwargs)
    assert out.grid_maps.shape[-2:] == (height // 8, width // 8)
    assert out.heatmaps.shape[-2:] == (height, width)
    assert_maps_match(out.grid_maps, reference)


def test_layer_maps_sum_to_grid_maps(clip):
    pixels = pixel_inputs(clip, [(48, 48)])
    out = LeGradExplainer(clip.model, layers=[0, 1, 3]).explain(
        pixel_values=pixels["pixel_values"], text_embeds=random_embeds(2, 16, seed=0), return_layer_maps=True
    )
    assert out.layer_maps.shape == (1, 2, 3, 6, 6)
    torch.testing.assert_close(out.layer_maps.sum(dim=2), out.grid_maps)
    for position, layer in enumerate([0, 1, 3]):
        reference = reference_grid_maps(clip.model, pixels, text_embeds=random_embeds(2, 16, seed=0), layers=[layer])
        assert_maps_match(out.layer_maps[:, :, position], reference)


def test_each_prompt_gets_its_own_map(clip):
    """Several prompts are explained one by one in effect: each map equals that prompt explained alone."""
    pixels = pixel_inputs(clip, [(48, 48)])
    embeds = random_embeds(3, 16, seed=7)
    explainer = LeGradExplainer(clip.model)
    together = explainer.explain(pixel_values=pixels["pixel_values"], text_embeds=embeds)
    for k in range(3):
        alone = explainer.explain(pixel_values=pixels["pixel_values"], text_embeds=embeds[k : k + 1])
        torch.testing.assert_close(together.grid_maps[:, k : k + 1], alone.grid_maps, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(minmax(together.grid_maps[:, 0]), minmax(together.grid_maps[:, 1]))


@pytest.mark.parametrize("family", ["clip", "vit"])
def test_a_wrong_scale_fails_the_raw_comparison_and_only_it(family, request, monkeypatch):
    """Relevance 1.5x too large (say, a head count divided once too few) fails `assert_maps_match`.

    Min-max normalization alone cannot see it: the same maps pass `assert_min_max_maps_match`.
    """
    tiny = request.getfixturevalue(family)
    pixels = pixel_inputs(tiny, [(48, 48), (48, 48)])
    if family == "clip":
        text_embeds = random_embeds(3, embedding_dim(tiny.model), seed=3)
        kwargs, reference_kwargs = {"text_embeds": text_embeds}, {"text_embeds": text_embeds}
    else:
        kwargs, reference_kwargs = {"targets": [0, 3]}, {"targets": torch.tensor([[0, 3]] * 2)}
    reference = reference_grid_maps(tiny.model, pixels, layers=list(range(NUM_LAYERS)), **reference_kwargs)
    explainer = LeGradExplainer(tiny.model, layers="all")
    assert_maps_match(explainer.explain(pixel_values=pixels["pixel_values"], **kwargs).grid_maps, reference)

    real = explainer_module.layer_relevance
    monkeypatch.setattr(explainer_module, "layer_relevance", lambda *args, **kw: 1.5 * real(*args, **kw))
    wrong = explainer.explain(pixel_values=pixels["pixel_values"], **kwargs).grid_maps
    torch.testing.assert_close(wrong, 1.5 * reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item())
    with pytest.raises(AssertionError, match="raw maps"):
        assert_maps_match(wrong, reference)
    assert_min_max_maps_match(wrong, reference)
