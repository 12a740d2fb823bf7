"""Block tails recorded during the trunk forward (engine step 1) against recomputed ones, and their memory budget.

Within `RECORDED_TAIL_MEMORY_FRACTION` of the free memory, an explained block's tail (attention context -> output
projection -> MLP) is recorded with gradients while the trunk runs, so no block runs twice; past the budget the
block is recomputed from its inputs. Both must give the reference's maps, alone and mixed in one call, and the
recorded graphs must be freed when `explain` returns.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from transformers_legrad import LeGradExplainer, engine
from transformers_legrad.adapters import adapter_for

from reference import minmax
from test_exact import assert_raw_maps_match
from tiny_models import NUM_LAYERS, random_image

FAMILIES = ["clip", "vit", "deit_teacher", "dinov2"]  # self-attention families (SigLIP explains its pooling head)
TOLERANCE = 1e-5


def explain_inputs(tiny, num_images=2):
    """Model-ready pixels of random images and 3 prompts (random text embeddings) or targets."""
    image_processor = getattr(tiny.processor, "image_processor", None) or tiny.processor
    pixels = image_processor(images=[random_image(s) for s in range(num_images)], return_tensors="pt")
    inputs = {"pixel_values": pixels["pixel_values"]}
    if adapter_for(tiny.model).is_dual_encoder:
        dim = adapter_for(tiny.model).embedding_dim
        inputs["text_embeds"] = torch.randn(3, dim, generator=torch.Generator().manual_seed(0))
    else:
        inputs["targets"] = [0, 2, 4]
    return inputs


def block_input_bytes(tiny, inputs) -> int:
    """Bytes of one block's input for these inputs, measured with a hook."""
    sizes = []
    block = adapter_for(tiny.model).blocks[0]
    handle = block.register_forward_pre_hook(
        lambda module, args: sizes.append(args[0].numel() * args[0].element_size())
    )
    try:
        LeGradExplainer(tiny.model, layers=[-1]).explain(**inputs)
    finally:
        handle.remove()
    return sizes[0]


def grid_maps(tiny, inputs, score, monkeypatch, free_bytes):
    monkeypatch.setattr(engine, "_free_memory_bytes", lambda device: free_bytes)
    return LeGradExplainer(tiny.model, layers="all", score=score).explain(**inputs).grid_maps


@pytest.mark.parametrize("score", ["legrad", "model"])
@pytest.mark.parametrize("prompts", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_partly_recorded_and_recomputed_tails_give_the_same_maps(family, prompts, score, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    inputs = explain_inputs(tiny)
    if "targets" in inputs:
        inputs["targets"] = inputs["targets"][:prompts]
    else:
        inputs["text_embeds"] = inputs["text_embeds"][:prompts]
    per_tail = engine.TAIL_BYTES_PER_INPUT_BYTE * block_input_bytes(tiny, inputs) / engine.RECORDED_TAIL_MEMORY_FRACTION
    recorded = grid_maps(tiny, inputs, score, monkeypatch, free_bytes=int(per_tail * NUM_LAYERS) + 1)
    partly = grid_maps(tiny, inputs, score, monkeypatch, free_bytes=int(per_tail * 2) + 1)
    recomputed = grid_maps(tiny, inputs, score, monkeypatch, free_bytes=0)
    assert recomputed.abs().max() > 0
    assert (minmax(recorded) - minmax(recomputed)).abs().max() <= TOLERANCE
    assert (minmax(partly) - minmax(recomputed)).abs().max() <= TOLERANCE
    assert_raw_maps_match(recorded, recomputed, TOLERANCE)
    assert_raw_maps_match(partly, recomputed, TOLERANCE)


@pytest.mark.parametrize("family", ["clip", "vit"])
def test_budget_decides_how_many_tails_are_recorded_and_no_block_runs_twice_within_it(family, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    inputs = explain_inputs(tiny)
    per_tail = engine.TAIL_BYTES_PER_INPUT_BYTE * block_input_bytes(tiny, inputs) / engine.RECORDED_TAIL_MEMORY_FRACTION
    blocks = list(adapter_for(tiny.model).blocks)
    for budget_tails, expected_reruns in [(NUM_LAYERS, 0), (2, NUM_LAYERS - 2), (0, NUM_LAYERS)]:
        monkeypatch.setattr(engine, "_free_memory_bytes", lambda device, n=budget_tails: int(per_tail * n) + 1)
        calls = []
        handles = [
            b.register_forward_pre_hook(lambda module, args, i=i, calls=calls: calls.append(i))
            for i, b in enumerate(blocks)
        ]
        try:
            LeGradExplainer(tiny.model, layers="all").explain(**inputs)
        finally:
            for handle in handles:
                handle.remove()
        reruns = len(calls) - NUM_LAYERS
        assert reruns == expected_reruns, (budget_tails, calls)
        # Recording goes first: the blocks rerun are the last ones, each once.
        assert calls[NUM_LAYERS:] == list(range(budget_tails, NUM_LAYERS))


@pytest.mark.parametrize("family", ["clip", "vit"])
def test_recorded_graphs_are_freed_when_explain_returns(family, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    contexts = []
    original = engine._TailRecorder._block_ends

    def watch(self, index, num_heads):
        hook = original(self, index, num_heads)

        def wrapped(module, args, output):
            result = hook(module, args, output)
            contexts.append(weakref.ref(self.states[index].handle.context))
            return result

        return wrapped

    monkeypatch.setattr(engine._TailRecorder, "_block_ends", watch)
    out = LeGradExplainer(tiny.model, layers="all").explain(**explain_inputs(tiny))
    gc.collect()
    assert len(contexts) == NUM_LAYERS
    assert all(ref() is None for ref in contexts), "a recorded local graph outlived explain"
    assert torch.isfinite(out.grid_maps).all()


def test_grad_mode_is_left_as_found(clip):
    inputs = explain_inputs(clip)
    for mode in (False, True):
        with torch.set_grad_enabled(mode):
            LeGradExplainer(clip.model, layers="all").explain(**inputs)
            assert torch.is_grad_enabled() is mode
