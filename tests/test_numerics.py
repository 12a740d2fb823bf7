"""Half precision and degenerate images: maps stay finite, non-zero, close to the float32 maps and, raw, to the
float32 reference."""

from __future__ import annotations

import copy

import pytest
import torch

from transformers_legrad import LeGradExplainer
from transformers_legrad.adapters import adapter_for

from reference import reference_grid_maps
from test_exact import (
    HALF_PRECISION_RAW_TOLERANCE,
    assert_heatmaps_are_normalized_grid_maps,
    assert_raw_maps_match,
    embedding_dim,
    explain_kwargs,
    pearson,
    pixel_inputs,
    random_embeds,
)
from tiny_models import NUM_LAYERS, random_image

PROMPTS = ["a photo of a red circle", "a photo of a cat", "a blue dog"]


def prompts_or_targets(family):
    return {"text": PROMPTS} if family in ("clip", "siglip", "siglip2") else {"targets": [0, 3]}


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2", "vit", "deit_teacher", "dinov2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_maps_agree_with_float32(family, dtype, request):
    tiny = request.getfixturevalue(family)
    pictures = [random_image(seed) for seed in range(2)]
    kwargs = prompts_or_targets(family)
    full = LeGradExplainer(tiny.model, tiny.processor, layers="all").explain(images=pictures, **kwargs)
    half_model = copy.deepcopy(tiny.model).to(dtype)
    half = LeGradExplainer(half_model, tiny.processor, layers="all").explain(images=pictures, **kwargs)
    assert half.heatmaps.dtype == torch.float32
    assert torch.isfinite(half.heatmaps).all() and torch.isfinite(half.grid_maps).all()
    assert half.grid_maps.flatten(2).abs().amax(-1).gt(0).all(), "a half-precision map is all zero"
    correlation = pearson(full.heatmaps, half.heatmaps)
    assert correlation.min() >= 0.99, correlation
    assert next(half_model.parameters()).dtype == dtype


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2", "vit", "deit_teacher", "dinov2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_raw_maps_match_the_float32_reference(family, dtype, request):
    """Raw grid and layer maps of a half-precision copy against the float32 reference, relative to each map's max.

    SigLIP's correction is off here: its 0.8 threshold on the null map may flip a cell under half-precision rounding.
    """
    tiny = request.getfixturevalue(family)
    pixels = pixel_inputs(tiny, [(48, 48), (64, 40)] if family == "siglip2" else [(48, 48), (48, 48)])
    if adapter_for(tiny.model).is_dual_encoder:
        embeds = random_embeds(3, embedding_dim(tiny.model), seed=3)
        kwargs, reference_kwargs = {"text_embeds": embeds}, {"text_embeds": embeds}
        if "siglip" in family:
            kwargs["correction"] = False
    else:
        kwargs, reference_kwargs = {"targets": [0, 3]}, {"targets": torch.tensor([[0, 3]] * 2)}
    half_model = copy.deepcopy(tiny.model).to(dtype)
    out = LeGradExplainer(half_model, layers="all").explain(**explain_kwargs(pixels), **kwargs, return_layer_maps=True)
    tolerance = HALF_PRECISION_RAW_TOLERANCE[dtype]
    reference = reference_grid_maps(tiny.model, pixels, layers=list(range(NUM_LAYERS)), **reference_kwargs)
    assert_raw_maps_match(out.grid_maps, reference, tolerance)
    for layer in range(NUM_LAYERS):
        alone = reference_grid_maps(tiny.model, pixels, layers=[layer], **reference_kwargs)
        assert_raw_maps_match(out.layer_maps[:, :, layer], alone, tolerance)


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_images_give_finite_maps(family, value, request):
    tiny = request.getfixturevalue(family)
    pixel_values = torch.full((1, 3, 48, 48), value)
    kwargs = prompts_or_targets(family)
    if "text" in kwargs:
        dim = getattr(tiny.model.config, "projection_dim", None) or tiny.model.config.vision_config.hidden_size
        kwargs = {"text_embeds": torch.randn(3, dim, generator=torch.Generator().manual_seed(0))}
        if family == "siglip":
            kwargs["null_text_embeds"] = torch.randn(1, dim, generator=torch.Generator().manual_seed(1))
    out = LeGradExplainer(tiny.model, layers="all").explain(pixel_values=pixel_values, **kwargs)
    assert torch.isfinite(out.heatmaps).all() and torch.isfinite(out.grid_maps).all()
    varies = assert_heatmaps_are_normalized_grid_maps(out.heatmaps, out.grid_maps)
    assert varies.any(), "every map is constant: the normalization is not exercised"


def test_constant_grid_map_gives_zero_heatmap():
    from transformers_legrad.maps import heatmaps_from_grids

    heatmaps = heatmaps_from_grids(torch.full((1, 2, 3, 3), 0.25), [(3, 3)], [(24, 24)])
    assert torch.equal(heatmaps, torch.zeros(1, 2, 24, 24))


def test_same_input_same_maps_bit_for_bit(clip):
    explainer = LeGradExplainer(clip.model, clip.processor, layers="all")
    first = explainer.explain(images=[random_image(0)], text=PROMPTS)
    second = explainer.explain(images=[random_image(0)], text=PROMPTS)
    assert torch.equal(first.grid_maps, second.grid_maps) and torch.equal(first.heatmaps, second.heatmaps)
