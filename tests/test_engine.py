"""The engine's promises: one trunk forward under the model's own attention, no block run twice while the recorded
block tails fit their memory budget (past it, local recomputation of only the explained blocks, one local graph at a
time), and a model left exactly as found (also when `explain` raises)."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from transformers_legrad import LeGradExplainer, engine
from transformers_legrad.adapters import adapter_for

from reference import minmax
from test_exact import assert_raw_maps_match
from tiny_models import NUM_LAYERS, random_image

FAMILIES = ["clip", "clip_vision_projection", "siglip", "siglip2", "vit", "deit", "deit_teacher", "dinov2"]


def explain_inputs(tiny, num_images=2):
    """Keyword arguments for `explain` on this family: model-ready tensors and 3 prompts or targets."""
    image_processor = getattr(tiny.processor, "image_processor", None) or tiny.processor
    processed = image_processor(images=[random_image(s) for s in range(num_images)], return_tensors="pt")
    kwargs = {k: processed[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes") if k in processed}
    config = tiny.model.config
    if config.model_type in ("clip", "clip_vision_model", "siglip", "siglip2"):
        dim = getattr(config, "projection_dim", None) or config.vision_config.hidden_size
        kwargs["text_embeds"] = torch.randn(3, dim, generator=torch.Generator().manual_seed(0))
        if "siglip" in config.model_type:
            kwargs["null_text_embeds"] = torch.randn(1, dim, generator=torch.Generator().manual_seed(1))
    else:
        kwargs["targets"] = [0, 2, 4]
    return kwargs


def model_state(model):
    """Everything `explain` must leave as found."""
    configs = [
        model.config,
        *(getattr(model.config, name) for name in ("vision_config", "text_config") if hasattr(model.config, name)),
    ]
    hook_dicts = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
    )
    return {
        "attn_implementation": [c._attn_implementation for c in configs],
        "module_attn": [
            getattr(m, "config", None) and m.config._attn_implementation
            for m in model.modules()
            if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")
        ],
        "hooks": {name: [len(getattr(m, attr, {})) for attr in hook_dicts] for name, m in model.named_modules()},
        "forward": {name: m.forward for name, m in model.named_modules()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {name: p.grad is None for name, p in model.named_parameters()},
        "placement": {name: (p.device, p.dtype) for name, p in model.named_parameters()},
        "weights": {name: t.clone() for name, t in model.state_dict().items()},
    }


def assert_same_state(before, after):
    for key in (
        "attn_implementation",
        "module_attn",
        "hooks",
        "forward",
        "training",
        "requires_grad",
        "grad",
        "placement",
    ):
        assert before[key] == after[key], f"{key} changed"
    for name, tensor in before["weights"].items():
        assert torch.equal(tensor, after["weights"][name]), f"weight {name} changed"


def count_calls(modules):
    counts = {id(m): 0 for m in modules}

    def hook(module, args):
        counts[id(module)] += 1

    return counts, [m.register_forward_pre_hook(hook) for m in modules]


@pytest.mark.parametrize("tails", ["recorded", "recomputed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_one_trunk_forward_and_only_explained_blocks_recomputed(family, tails, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    if tails == "recomputed":  # no memory for recorded tails: explained blocks are recomputed from their inputs
        monkeypatch.setattr(engine, "RECORDED_TAIL_MEMORY_FRACTION", 0.0)
    adapter = adapter_for(tiny.model)
    blocks = list(adapter.blocks)
    embeddings = (
        tiny.model.vision_model.embeddings
        if hasattr(tiny.model, "vision_model")
        else getattr(tiny.model, tiny.model.base_model_prefix).embeddings
    )
    counts, handles = count_calls([embeddings, *blocks])
    try:
        LeGradExplainer(tiny.model, layers=[0, 2]).explain(**explain_inputs(tiny))
    finally:
        for handle in handles:
            handle.remove()
    assert counts[id(embeddings)] == 1, "the trunk ran more than once for 3 prompts"
    # SigLIP explains its head, and recorded tails need no rerun: then no block runs twice.
    recomputed = 0 if adapter.explains_pooling_head or tails == "recorded" else 1
    expected = [1 + (recomputed if i in (0, 2) else 0) for i in range(NUM_LAYERS)]
    assert [counts[id(b)] for b in blocks] == expected


@pytest.mark.parametrize("family", ["clip", "siglip2", "vit", "dinov2"])
def test_trunk_keeps_the_models_attention_implementation(family, request):
    """Every attention call sees the model's own implementation (SDPA) and no `output_attentions`."""
    tiny = request.getfixturevalue(family)
    seen = []

    def record(module, args, kwargs):
        seen.append((module.config._attn_implementation, bool(kwargs.get("output_attentions"))))

    blocks = adapter_for(tiny.model).blocks
    attentions = [m for block in blocks for m in block.modules() if hasattr(m, "v_proj")]
    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in attentions]
    try:
        LeGradExplainer(tiny.model, layers="all").explain(**explain_inputs(tiny))
    finally:
        for handle in handles:
            handle.remove()
    assert seen and all(impl == "sdpa" and not output_attentions for impl, output_attentions in seen), seen


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
def test_one_local_graph_alive_at_a_time(family, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    # Recorded tails are held together within their memory budget (tests/test_engine_recording.py); past it, blocks
    # are recomputed one at a time, which is what this test watches.
    monkeypatch.setattr(engine, "RECORDED_TAIL_MEMORY_FRACTION", 0.0)
    explainer = LeGradExplainer(tiny.model, layers="all")
    adapter = explainer.adapter
    contexts = []

    def watch(make_graph):
        def wrapped(*args, **kwargs):
            gc.collect()
            alive = [ref for ref in contexts if ref() is not None]
            assert not alive, "the previous block's local graph is still alive"
            readout, handle = make_graph(*args, **kwargs)
            contexts.append(weakref.ref(handle.context))
            return readout, handle

        return wrapped

    if adapter.explains_pooling_head:
        monkeypatch.setattr(adapter, "pooling_head_attention", watch(adapter.pooling_head_attention))
    else:
        monkeypatch.setattr(engine, "_recompute_block", watch(engine._recompute_block))
    explainer.explain(**explain_inputs(tiny))
    assert len(contexts) == NUM_LAYERS


@pytest.mark.parametrize("family", FAMILIES)
def test_model_left_as_found(family, request):
    """Train mode with a frozen part, on a copy: everything comes back exactly, and the model's output too."""
    tiny = request.getfixturevalue(family)
    model = copy.deepcopy(tiny.model).train()
    first_block = adapter_for(model).blocks[0]
    first_block.eval()
    first_block.requires_grad_(False)
    inputs = explain_inputs(tiny)
    before = model_state(model)
    out = LeGradExplainer(model, layers="all").explain(**inputs)
    assert torch.isfinite(out.heatmaps).all()
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
def test_eager_model_stays_eager_and_gives_the_same_maps(family, request):
    tiny = request.getfixturevalue(family)
    eager = copy.deepcopy(tiny.model)
    eager.set_attn_implementation("eager")
    inputs = explain_inputs(tiny)
    before = model_state(eager)
    ours = LeGradExplainer(eager, layers="all").explain(**inputs)
    assert_same_state(before, model_state(eager))
    sdpa = LeGradExplainer(tiny.model, layers="all").explain(**inputs)
    assert (minmax(ours.grid_maps) - minmax(sdpa.grid_maps)).abs().max() <= 1e-4
    assert_raw_maps_match(ours.grid_maps, sdpa.grid_maps)


@pytest.mark.parametrize("family", ["clip", "siglip", "vit", "deit_teacher"])
def test_model_left_as_found_when_explain_raises_half_way(family, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    model = copy.deepcopy(tiny.model).train()
    explainer = LeGradExplainer(model, layers="all")
    adapter = explainer.adapter
    name = "pooling_head_attention" if adapter.explains_pooling_head else "layer_features"
    original = getattr(adapter, name)
    calls = []

    def fail_on_second_layer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the middle")
        return original(*args, **kwargs)

    monkeypatch.setattr(adapter, name, fail_on_second_layer)
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom in the middle"):
        explainer.explain(**explain_inputs(tiny))
    assert_same_state(before, model_state(model))
    monkeypatch.undo()
    out = explainer.explain(**explain_inputs(tiny))  # and it still works afterwards
    assert torch.isfinite(out.grid_maps).all()


def test_explain_under_no_grad_works(clip):
    with torch.no_grad():
        out = LeGradExplainer(clip.model).explain(**explain_inputs(clip))
    assert out.grid_maps.abs().sum() > 0


def test_two_threads_get_the_same_maps_as_one(clip):
    import threading

    explainer = LeGradExplainer(clip.model, layers="all")
    inputs = explain_inputs(clip)
    expected = explainer.explain(**inputs).grid_maps
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(explainer.explain(**inputs).grid_maps)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 6
    for result in results:
        assert torch.equal(result, expected)
