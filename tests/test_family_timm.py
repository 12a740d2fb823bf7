"""timm vision transformers through transformers: `TimmWrapperForImageClassification` and `TimmWrapperModel`.

Tiny random timm models (`tiny_timm.py`: ViT with CLS, with registers and average pool, with an attention-pooling
head; DeiT 3 with qk_norm and a normalized context; distilled DeiT; EVA-02 with RoPE and SwiGLU; EVA with grouped-query
attention; a SigLIP-like and a ViT backbone), saved and loaded back. Raw `grid_maps` and `layer_maps` against the
independent reference in `reference_timm.py` (unfused attention, full graph, one autograd.grad per layer and
direction) for the default, all and an arbitrary set of layers, 1 and 3 targets, batches, non-square inputs and
`score="model"`; gated attention; bfloat16 against float32; the model left as found; backbones along directions and
reference images; refusals; the pipeline and the CLI.

timm imports torchvision: these tests run in `.ci/run`'s parity environment and are skipped elsewhere.
"""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm", reason="timm (and torchvision) is not installed: `pip install 'transformers-legrad[timm]'`")

from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, pipeline  # noqa: E402

from transformers_legrad import LeGradExplainer, cards, cli  # noqa: E402
from transformers_legrad.adapters.timm_wrapper import TimmBackboneAdapter, TimmClassifierAdapter  # noqa: E402

from reference_timm import reference_layer_maps  # noqa: E402
from test_engine import assert_same_state, model_state  # noqa: E402
from test_exact import assert_raw_close, pearson  # noqa: E402
from tiny_models import LABELS, NUM_LAYERS, random_image  # noqa: E402
from tiny_timm import NUM_REGISTERS, TIMM_MODELS, make_timm  # noqa: E402

NAMES = list(TIMM_MODELS)
BACKBONES = [name for name in NAMES if TIMM_MODELS[name][0].__name__ == "TimmWrapperModel"]
CLASSIFIERS = [name for name in NAMES if name not in BACKBONES]
#: layer case -> (layers argument, explained blocks, number of targets)
LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1], 1),
    "all": ("all", list(range(NUM_LAYERS)), 3),
    "arbitrary": ([0, 2], [0, 2], 3),
}


@functools.cache
def tiny(name: str):
    return make_timm(name)


def images(count: int = 2):
    return [random_image(seed) for seed in range(count)]


def processed(name: str, pictures=None) -> torch.Tensor:
    return tiny(name).processor(images=pictures or images(), return_tensors="pt")["pixel_values"]


def targets_for(name: str, count: int, batch: int = 2, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """(explain's keyword arguments, directions [batch, count, F]) for `count` classes or random directions."""
    generator = torch.Generator().manual_seed(seed + count)
    if name in BACKBONES:
        raw = torch.randn(count, tiny(name).model.timm_model.num_features, generator=generator)
        return {"directions": raw}, F.normalize(raw, dim=-1).expand(batch, -1, -1)
    ids = torch.randperm(len(LABELS), generator=generator)[:count].repeat(batch, 1)
    return {"targets": ids}, F.one_hot(ids, len(LABELS)).float()


# --- exact maps ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_each_wrapper_class_has_its_adapter(name):
    adapter = LeGradExplainer(tiny(name).model).adapter
    assert type(adapter) is (TimmBackboneAdapter if name in BACKBONES else TimmClassifierAdapter)
    expected_prefix = {"vit_registers": 1 + NUM_REGISTERS, "deit_distilled": 2, "siglip": 0}.get(name, 1)
    assert adapter.num_prefix_tokens == expected_prefix
    assert adapter.explains_pooling_head == (name in ("vit_map", "siglip"))


@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("name", NAMES)
def test_maps_equal_the_reference(name, layer_case):
    layers, indices, count = LAYER_CASES[layer_case]
    pixel_values = processed(name)
    kwargs, directions = targets_for(name, count)
    out = LeGradExplainer(tiny(name).model, layers=layers).explain(
        pixel_values=pixel_values, return_layer_maps=True, **kwargs
    )
    assert out.explained_layers == indices and out.grid_maps.shape == (2, count, 6, 6)
    reference = reference_layer_maps(tiny(name).model, pixel_values, directions, indices)
    assert_raw_close(out.layer_maps, reference)
    assert_raw_close(out.grid_maps, reference.sum(dim=2))


@pytest.mark.parametrize("name", NAMES)
def test_model_score_and_final_scores_equal_the_reference(name):
    model = tiny(name).model
    pixel_values = processed(name)
    kwargs, directions = targets_for(name, 3, seed=1)
    out = LeGradExplainer(model, layers="all", score="model").explain(
        pixel_values=pixel_values, return_layer_maps=True, **kwargs
    )
    reference = reference_layer_maps(model, pixel_values, directions, list(range(NUM_LAYERS)), score="model")
    assert_raw_close(out.layer_maps, reference)
    with torch.no_grad():
        if name in BACKBONES:
            final = F.normalize(model(pixel_values=pixel_values).pooler_output, dim=-1)
        else:
            final = model(pixel_values=pixel_values).logits
    torch.testing.assert_close(out.scores, torch.einsum("bf,bkf->bk", final, directions), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_the_last_blocks_model_readout_is_the_models_own_output(name):
    """`score="model"` on the last block's tokens is the model's forward (logits, or its normalized pooled
    feature): the pooling head reads the tokens the model's pool reads (CLS left out where timm leaves it out)."""
    model, pixel_values = tiny(name).model, processed(name)
    explainer = LeGradExplainer(model)
    adapter, pixels = explainer.adapter, explainer.adapter.prepare_pixels(pixel_values)
    kept = {}
    handle = adapter.blocks[-1].register_forward_hook(lambda module, args, output: kept.setdefault("tokens", output))
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
    handle.remove()
    if adapter.explains_pooling_head:
        readout, _ = adapter.pooling_head_attention(kept["tokens"], pixels, "model")
    else:
        readout = adapter.layer_features(kept["tokens"], pixels, "model")
    own = F.normalize(output.pooler_output, dim=-1) if name in BACKBONES else output.logits
    torch.testing.assert_close(readout.detach(), own, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vit_registers", "eva"])
def test_non_square_inputs_equal_the_reference(name):
    """Models built with `dynamic_img_size=True` take any multiple of the patch: a 6 x 8 grid (RoPE for EVA)."""
    pixel_values = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    kwargs, directions = targets_for(name, 2)
    out = LeGradExplainer(tiny(name).model, layers="all").explain(
        pixel_values=pixel_values, return_layer_maps=True, **kwargs
    )
    assert out.grid_shapes == [(6, 8), (6, 8)]
    assert_raw_close(out.layer_maps, reference_layer_maps(tiny(name).model, pixel_values, directions, [0, 1, 2, 3]))


def test_gated_attention_equals_the_reference():
    """timm's gated attention multiplies the (normalized) context by sigmoid(gate(x)): a function of the block's
    input, not of A, so it is part of the recorded tail after the context leaf."""
    model = copy.deepcopy(tiny("deit3").model)
    torch.manual_seed(5)
    for block in model.timm_model.blocks:
        block.attn.gate = torch.nn.Linear(32, block.attn.attn_dim)
    pixel_values = processed("deit3")
    kwargs, directions = targets_for("deit3", 2)
    out = LeGradExplainer(model, layers="all").explain(pixel_values=pixel_values, return_layer_maps=True, **kwargs)
    reference = reference_layer_maps(model, pixel_values, directions, list(range(NUM_LAYERS)))
    assert_raw_close(out.layer_maps, reference)
    without_gate = reference_layer_maps(tiny("deit3").model, pixel_values, directions, list(range(NUM_LAYERS)))
    assert not torch.allclose(reference, without_gate, rtol=1e-2, atol=1e-3 * float(reference.abs().max()))


@pytest.mark.parametrize("name", ["vit", "eva", "siglip"])
def test_bfloat16_maps_correlate_with_float32(name):
    kwargs, _ = targets_for(name, 2)
    full = LeGradExplainer(tiny(name).model, tiny(name).processor, layers="all").explain(images=images(), **kwargs)
    half_model = copy.deepcopy(tiny(name).model).to(torch.bfloat16)
    half = LeGradExplainer(half_model, tiny(name).processor, layers="all").explain(images=images(), **kwargs)
    assert torch.isfinite(half.grid_maps).all() and half.grid_maps.flatten(2).amax(-1).gt(0).all()
    correlation = pearson(full.grid_maps, half.grid_maps)
    assert correlation.min() >= 0.99, correlation
    assert next(half_model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("score", ["legrad", "model"])
@pytest.mark.parametrize("name", ["vit_map", "eva", "eva_gqa", "siglip"])
def test_the_model_is_left_untouched(name, score):
    model = copy.deepcopy(tiny(name).model).train()
    before = model_state(model)
    fused = {key: module.fused_attn for key, module in model.named_modules() if hasattr(module, "fused_attn")}
    kwargs, _ = targets_for(name, 2, batch=1)
    LeGradExplainer(model, tiny(name).processor, layers="all", score=score).explain(images=random_image(4), **kwargs)
    assert_same_state(before, model_state(model))
    assert fused == {key: module.fused_attn for key, module in model.named_modules() if hasattr(module, "fused_attn")}


# --- backbones -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKBONES)
def test_a_reference_image_points_at_itself(name):
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor)
    query, other = images()
    out = explainer.explain(images=[query, other], reference_images=[query, other], labels=["query", "other"])
    torch.testing.assert_close(out.scores.diagonal(), torch.ones(2), rtol=0, atol=1e-5)
    with torch.no_grad():
        own = tiny(name).model(pixel_values=processed(name, [query, other])).pooler_output
    along_own = explainer.explain(images=[query, other], directions=own)
    torch.testing.assert_close(out.grid_maps, along_own.grid_maps)
    torch.testing.assert_close(out.probabilities, out.scores)  # cosines: no softmax over directions


# --- refusals --------------------------------------------------------------------------------------------------
def test_a_convolutional_timm_model_is_refused():
    config = TimmWrapperConfig(
        architecture="convnext_atto", model_args={"dims": (8, 8, 8, 8), "depths": (1, 1, 1, 1)}, num_labels=2
    )
    with pytest.raises(TypeError, match="only ViT-style timm models with global self-attention"):
        LeGradExplainer(TimmWrapperForImageClassification(config))


@pytest.mark.parametrize(
    "model_args, message",
    [
        ({"use_post_norm": True}, "EvaBlockPostNorm.*pre-norm blocks"),
        ({"global_pool": ""}, "global_pool=''"),
    ],
)
def test_unsupported_timm_layouts_are_refused(model_args, message):
    args = dict(TIMM_MODELS["eva"][2], **model_args)
    config = TimmWrapperConfig(architecture="eva02_tiny_patch14_224", model_args=args, num_labels=2)
    with pytest.raises(TypeError, match=message):
        LeGradExplainer(TimmWrapperForImageClassification(config))


def test_a_hybrid_vit_is_refused_by_its_patch_embedding():
    """A ViT after a ResNet stem (`HybridEmbed`) is refused naming hybrid models, not with a wrong channel count."""
    args = dict(img_size=64, embed_dim=32, depth=1, num_heads=4)  # the stem divides by 4, then 8 px patches
    config = TimmWrapperConfig(architecture="vit_tiny_r_s16_p8_224", model_args=args, num_labels=2)
    with pytest.raises(TypeError, match="HybridEmbed, not timm's PatchEmbed: hybrid models"):
        LeGradExplainer(TimmWrapperForImageClassification(config))


def test_sizes_the_model_cannot_take_are_refused():
    explainer = LeGradExplainer(tiny("vit").model, tiny("vit").processor)
    with pytest.raises(ValueError, match=r"takes only 48x48.*dynamic_img_size=True"):
        explainer.explain(pixel_values=torch.randn(1, 3, 48, 64), targets=[0])
    with pytest.raises(ValueError, match="not a whole number of 8x8 patches"):
        LeGradExplainer(tiny("eva").model).explain(pixel_values=torch.randn(1, 3, 48, 60), targets=[0])
    with pytest.raises(ValueError, match="fixed transform and cannot resize to `image_size`"):
        explainer.explain(images=random_image(0), targets=[0], image_size=64)


# --- pipeline, CLI, card ---------------------------------------------------------------------------------------
def test_pipeline_top_k():
    import transformers_legrad  # noqa: F401  (registers the task)

    explain = pipeline("legrad-explanation", model=tiny("vit").path)
    assert type(explain.model) is TimmWrapperForImageClassification
    image = random_image(6, (64, 40))
    results = explain(image, top_k=2)
    with torch.no_grad():
        expected = tiny("vit").model(pixel_values=processed("vit", [image])).logits.softmax(-1)[0].topk(2)
    assert [entry["label"] for entry in results] == [LABELS[int(i)] for i in expected.indices]
    torch.testing.assert_close(torch.tensor([entry["score"] for entry in results]), expected.values)
    assert all(entry["heatmap"].size == image.size for entry in results)


def test_cli_top_k(tmp_path, capsys):
    image = tmp_path / "image.png"
    random_image(7).save(image)
    out = tmp_path / "out"
    assert cli.main(["explain", str(image), "--model", tiny("vit").path, "--top-k", "2", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and {record["label"] for record in records} <= set(LABELS)
    capsys.readouterr()


def test_the_siglip_checkpoint_is_carded_as_a_backbone():
    entry = cards.CARD_MODELS["timm/vit_base_patch16_siglip_224.webli"]
    assert entry.model_class == "TimmWrapperModel" and entry.license == "apache-2.0"
    card = cards.render_card("timm/vit_base_patch16_siglip_224.webli")
    assert "pipeline_tag: image-feature-extraction" in card and "TimmWrapperModel.from_pretrained" in card
