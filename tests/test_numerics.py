"""Half precision and degenerate images: maps stay finite, non-zero and close to the float32 maps."""

from __future__ import annotations

import copy

import pytest
import torch

from transformers_legrad import LeGradExplainer

from tiny_models import random_image

PROMPTS = ["a photo of a red circle", "a photo of a cat", "a blue dog"]


def pearson(a, b):
    """Per-map Pearson correlation of [batch, prompts, H, W] maps."""
    a, b = a.flatten(2).double(), b.flatten(2).double()
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def explain_kwargs(family):
    return {"text": PROMPTS} if family in ("clip", "siglip", "siglip2") else {"targets": [0, 3]}


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2", "vit", "deit_teacher", "dinov2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_maps_agree_with_float32(family, dtype, request):
    tiny = request.getfixturevalue(family)
    pictures = [random_image(seed) for seed in range(2)]
    full = LeGradExplainer(tiny.model, tiny.processor, layers="all").explain(images=pictures, **explain_kwargs(family))
    half_model = copy.deepcopy(tiny.model).to(dtype)
    half = LeGradExplainer(half_model, tiny.processor, layers="all").explain(images=pictures, **explain_kwargs(family))
    assert half.heatmaps.dtype == torch.float32
    assert torch.isfinite(half.heatmaps).all() and torch.isfinite(half.grid_maps).all()
    assert half.grid_maps.flatten(2).abs().amax(-1).gt(0).all(), "a half-precision map is all zero"
    correlation = pearson(full.heatmaps, half.heatmaps)
    assert correlation.min() >= 0.99, correlation
    assert next(half_model.parameters()).dtype == dtype


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_images_give_finite_maps(family, value, request):
    tiny = request.getfixturevalue(family)
    pixel_values = torch.full((1, 3, 48, 48), value)
    kwargs = explain_kwargs(family)
    if "text" in kwargs:
        dim = getattr(tiny.model.config, "projection_dim", None) or tiny.model.config.vision_config.hidden_size
        kwargs = {"text_embeds": torch.randn(3, dim, generator=torch.Generator().manual_seed(0))}
        if family == "siglip":
            kwargs["null_text_embeds"] = torch.randn(1, dim, generator=torch.Generator().manual_seed(1))
    out = LeGradExplainer(tiny.model, layers="all").explain(pixel_values=pixel_values, **kwargs)
    assert torch.isfinite(out.heatmaps).all() and torch.isfinite(out.grid_maps).all()
    assert out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1


def test_constant_grid_map_gives_zero_heatmap():
    from transformers_legrad.maps import heatmaps_from_grids

    heatmaps = heatmaps_from_grids(torch.full((1, 2, 3, 3), 0.25), [(3, 3)], [(24, 24)])
    assert torch.equal(heatmaps, torch.zeros(1, 2, 24, 24))


def test_same_input_same_maps_bit_for_bit(clip):
    explainer = LeGradExplainer(clip.model, clip.processor, layers="all")
    first = explainer.explain(images=[random_image(0)], text=PROMPTS)
    second = explainer.explain(images=[random_image(0)], text=PROMPTS)
    assert torch.equal(first.grid_maps, second.grid_maps) and torch.equal(first.heatmaps, second.heatmaps)
