"""Property-based tests (hypothesis) over image sizes, prompt counts, layer sets and batch sizes, and a fuzz of the
command line with generated broken files."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformers_legrad import LeGradExplainer
from transformers_legrad.cli import main
from transformers_legrad.images import ImageReadError, open_image

from test_exact import assert_heatmaps_are_normalized_grid_maps
from tiny_models import random_image

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
layer_sets = st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True)


@pytest.mark.slow
@SETTINGS
@given(
    height=st.integers(8, 72),
    width=st.integers(8, 72),
    batch=st.integers(1, 3),
    prompts=st.integers(1, 4),
    layers=layer_sets,
    seed=st.integers(0, 2**16),
)
def test_clip_maps_have_the_documented_form_and_equal_one_at_a_time(clip, height, width, batch, prompts, layers, seed):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 3, height, width, generator=generator)
    text_embeds = torch.randn(prompts, 16, generator=generator)
    explainer = LeGradExplainer(clip.model, layers=layers)
    out = explainer.explain(pixel_values=pixel_values, text_embeds=text_embeds)
    grid = (height // 8, width // 8)
    assert out.grid_maps.shape == (batch, prompts, *grid) and out.heatmaps.shape == (batch, prompts, height, width)
    assert torch.isfinite(out.grid_maps).all() and (out.grid_maps >= 0).all()
    assert_heatmaps_are_normalized_grid_maps(out.heatmaps, out.grid_maps)
    assert out.explained_layers == sorted(layers) and out.grid_shapes == [grid] * batch
    b, k = seed % batch, seed % prompts  # one (image, prompt) pair, explained alone
    alone = explainer.explain(pixel_values=pixel_values[b : b + 1], text_embeds=text_embeds[k : k + 1])
    torch.testing.assert_close(alone.grid_maps[0, 0], out.grid_maps[b, k], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
@SETTINGS
@given(
    height=st.integers(8, 64),
    width=st.integers(8, 64),
    batch=st.integers(1, 3),
    targets=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    layers=layer_sets,
    seed=st.integers(0, 2**16),
)
def test_classifier_maps_equal_one_at_a_time(vit, height, width, batch, targets, layers, seed):
    pixel_values = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    explainer = LeGradExplainer(vit.model, layers=layers)
    out = explainer.explain(pixel_values=pixel_values, targets=targets)
    assert out.grid_maps.shape == (batch, len(targets), height // 8, width // 8)
    assert torch.isfinite(out.heatmaps).all()
    assert_heatmaps_are_normalized_grid_maps(out.heatmaps, out.grid_maps)
    b = batch - 1
    alone = explainer.explain(pixel_values=pixel_values[b:], targets=targets[-1:])
    torch.testing.assert_close(alone.grid_maps[0, 0], out.grid_maps[b, -1], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=3000),
    suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".webp"]),
    signature=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM"]),
)
def test_cli_fuzz_with_broken_files(clip, tmp_path_factory, capsys, data, suffix, signature):
    folder = tmp_path_factory.mktemp("fuzz")
    random_image(0, (32, 32)).save(folder / "good.png")
    broken = folder / f"broken{suffix}"
    broken.write_bytes(signature + data)
    try:
        open_image(broken)
        readable = True
    except ImageReadError:
        readable = False
    code = main(["explain", str(folder), "--model", clip.path, "--prompt", "a cat", "--out", str(folder / "out")])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert (folder / "out" / "good_00_a-cat_overlay.png").is_file()
    if readable:
        assert code == 0
    else:
        assert code == 1 and f"error: {broken}" in captured.err
