"""Baseline explainers: shapes, values, independent recomputations on tiny models, and the user's model untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from transformers_legrad import LeGradExplainer
from transformers_legrad.evaluation import baselines
from transformers_legrad.evaluation.baselines import (
    BASELINES,
    CheferExplainer,
    GradCAMExplainer,
    RawAttentionExplainer,
    RolloutExplainer,
    attention_rollout,
    chefer_relevance,
    gradcam_relevance,
    make_explainer,
)

from test_exact import assert_heatmaps_are_normalized_grid_maps
from tiny_models import PATCH_SIZE, random_image

GRID = 48 // PATCH_SIZE
PROMPTS = ["a photo of a red circle", "a photo of a cat"]


def _query(tiny) -> dict:
    if LeGradExplainer(tiny.model).adapter.is_dual_encoder:
        return {"text": PROMPTS}
    return {"targets": [0, 3]}


def _pixels(tiny, *images):
    image_processor = getattr(tiny.processor, "image_processor", tiny.processor)
    return image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def _eager(tiny):
    model = copy.deepcopy(tiny.model)
    model.set_attn_implementation("eager")
    return model.float().eval()


@pytest.fixture(params=["clip", "siglip", "vit"])
def tiny(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_shapes_values_and_scores(tiny, method):
    images = [random_image(0), random_image(1)]
    out = make_explainer(method, tiny.model, tiny.processor).explain(images=images, **_query(tiny))
    assert out.grid_maps.shape == (2, 2, GRID, GRID)
    assert out.heatmaps.shape == (2, 2, 48, 48)
    assert torch.isfinite(out.grid_maps).all() and (out.grid_maps >= 0).all()
    assert_heatmaps_are_normalized_grid_maps(out.heatmaps, out.grid_maps)
    assert out.layer_maps is None and out.grid_shapes == [(GRID, GRID)] * 2
    legrad = LeGradExplainer(tiny.model, tiny.processor).explain(images=images, **_query(tiny))
    assert out.labels == legrad.labels
    torch.testing.assert_close(out.scores, legrad.scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.probabilities, legrad.probabilities, atol=1e-4, rtol=1e-4)


def test_gradient_methods_depend_on_the_prompt_attention_methods_do_not(clip):
    image = random_image(2)
    for cls, depends in ((GradCAMExplainer, True), (CheferExplainer, True), (RawAttentionExplainer, False)):
        grids = cls(clip.model, clip.processor).explain(images=image, text=PROMPTS).grid_maps[0]
        assert (not torch.equal(grids[0], grids[1])) == depends, cls.method
    grids = RolloutExplainer(clip.model, clip.processor).explain(images=image, text=PROMPTS).grid_maps[0]
    assert torch.equal(grids[0], grids[1])


def test_raw_attention_is_the_models_last_cls_row(clip, vit):
    for tiny, query in ((clip, {"text": PROMPTS[:1]}), (vit, {"targets": [1]})):
        pixel_values = _pixels(tiny, random_image(3))
        out = RawAttentionExplainer(tiny.model, tiny.processor).explain(pixel_values=pixel_values, **query)
        with torch.no_grad():
            eager = _eager(tiny)
            backbone = eager.vision_model if hasattr(eager, "vision_model") else eager
            attentions = backbone(pixel_values=pixel_values, output_attentions=True).attentions
        expected = attentions[-1].mean(dim=1)[0, 0, 1:].reshape(GRID, GRID)
        torch.testing.assert_close(out.grid_maps[0, 0], expected, atol=1e-6, rtol=1e-5)


def test_raw_attention_for_siglip_is_the_pooling_heads_attention(siglip):
    pixel_values = _pixels(siglip, random_image(4))
    out = RawAttentionExplainer(siglip.model, siglip.processor).explain(pixel_values=pixel_values, text=PROMPTS[:1])
    with torch.no_grad():
        vision = siglip.model.vision_model
        tokens = vision(pixel_values=pixel_values).last_hidden_state  # after post_layernorm, as the head reads it
        probe = vision.head.probe.expand(1, -1, -1)
        _, weights = vision.head.attention(probe, tokens, tokens, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(out.grid_maps[0, 0], weights[0, 0].reshape(GRID, GRID), atol=1e-6, rtol=1e-5)


def test_pooling_head_by_hand_is_the_models_head(siglip):
    pixel_values = _pixels(siglip, random_image(5), random_image(6))
    with torch.no_grad():
        vision = siglip.model.vision_model(pixel_values=pixel_values)
        pooled, probabilities = baselines.pooling_head_by_hand(siglip.model.vision_model.head, vision.last_hidden_state)
    torch.testing.assert_close(pooled, vision.pooler_output, atol=1e-5, rtol=1e-5)
    assert probabilities.shape == (2, 4, 1, GRID * GRID)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 4, 1))


def test_rollout_rows_sum_to_one_and_one_block_is_half_attention_half_identity():
    torch.manual_seed(0)
    attentions = [torch.randn(2, 3, 5, 5).softmax(dim=-1) for _ in range(4)]
    rollout = attention_rollout(attentions)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 5))
    single = attention_rollout(attentions[:1])
    torch.testing.assert_close(single, 0.5 * attentions[0].mean(dim=1) + 0.5 * torch.eye(5))
    two = attention_rollout(attentions[:2])
    torch.testing.assert_close(two, (0.5 * attentions[1].mean(1) + 0.5 * torch.eye(5)) @ single)  # last on the left


def test_rollout_and_chefer_match_direct_computations(vit):
    pixel_values = _pixels(vit, random_image(7))
    target = 2
    eager = _eager(vit)
    pixel_values_leaf = pixel_values.clone().requires_grad_(True)
    output = eager(pixel_values=pixel_values_leaf, output_attentions=True)
    attentions = output.attentions
    gradients = torch.autograd.grad(output.logits[0, target], attentions)
    relevance = torch.eye(attentions[0].shape[-1])
    rollout = torch.eye(attentions[0].shape[-1])
    for attention, gradient in zip(attentions, gradients, strict=True):
        relevance = relevance + (gradient * attention).clamp(min=0).mean(dim=1)[0] @ relevance
        rollout = (0.5 * attention.detach().mean(dim=1)[0] + 0.5 * torch.eye(rollout.shape[0])) @ rollout

    chefer = CheferExplainer(vit.model, vit.processor).explain(pixel_values=pixel_values, targets=[target])
    torch.testing.assert_close(chefer.grid_maps[0, 0], relevance[0, 1:].reshape(GRID, GRID), atol=1e-6, rtol=1e-4)
    rolled = RolloutExplainer(vit.model, vit.processor).explain(pixel_values=pixel_values, targets=[target])
    torch.testing.assert_close(rolled.grid_maps[0, 0], rollout[0, 1:].reshape(GRID, GRID), atol=1e-6, rtol=1e-4)


def test_gradcam_matches_a_direct_computation(vit):
    pixel_values = _pixels(vit, random_image(8))
    target = 4
    model = copy.deepcopy(vit.model).float().eval()
    captured = {}
    model.vit.layers[-1].layernorm_before.register_forward_hook(lambda module, args, out: captured.update(x=out))
    logits = model(pixel_values=pixel_values.clone().requires_grad_(True)).logits
    tokens = captured["x"]
    (gradient,) = torch.autograd.grad(logits[0, target], tokens)
    weights = gradient[0, 1:].mean(dim=0)
    expected = (tokens[0, 1:] @ weights).clamp(min=0).reshape(GRID, GRID).detach()

    out = GradCAMExplainer(vit.model, vit.processor).explain(pixel_values=pixel_values, targets=[target])
    torch.testing.assert_close(out.grid_maps[0, 0], expected, atol=1e-6, rtol=1e-4)


def test_gradcam_and_chefer_formulas_by_hand():
    tokens = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0]]])  # a prefix token, then two patches
    gradients = torch.tensor([[[5.0, 5.0], [2.0, -1.0], [0.0, -1.0]]])  # patch mean: w = (1, -1)
    torch.testing.assert_close(gradcam_relevance(tokens, gradients, 1), torch.tensor([[0.0, 1.0, 0.0]]))

    attention = torch.full((1, 2, 3, 3), 1 / 3)
    # Zero gradients leave R = I; all-ones gradients add the mean attention: R = I + A.
    torch.testing.assert_close(chefer_relevance([attention], [torch.zeros_like(attention)]), torch.eye(3)[None])
    torch.testing.assert_close(
        chefer_relevance([attention], [torch.ones_like(attention)]), (torch.eye(3) + 1 / 3)[None]
    )
    # Negative gradient * attention is clipped.
    torch.testing.assert_close(chefer_relevance([attention], [-torch.ones_like(attention)]), torch.eye(3)[None])


def test_default_targets_are_the_top1_class(vit):
    images = [random_image(9), random_image(10)]
    out = GradCAMExplainer(vit.model, vit.processor).explain(images=images)
    legrad = LeGradExplainer(vit.model, vit.processor).explain(images=images)
    assert torch.equal(out.target_ids, legrad.target_ids)
    assert out.labels == legrad.labels


def _snapshot(model):
    return {
        "state": {name: tensor.clone() for name, tensor in model.state_dict().items()},
        "attention": [getattr(m.config, "_attn_implementation", None) for m in model.modules() if hasattr(m, "config")],
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "dtype": next(model.parameters()).dtype,
    }


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
def test_users_model_is_left_untouched(family, request):
    tiny = request.getfixturevalue(family)
    model = copy.deepcopy(tiny.model).train()  # train mode and a frozen layer, to see that both stay as they are
    next(model.parameters()).requires_grad_(False)
    before = _snapshot(model)
    for method in BASELINES:
        make_explainer(method, model, tiny.processor).explain(images=random_image(11), **_query(tiny))
    after = _snapshot(model)
    assert after["attention"] == before["attention"] and "eager" not in after["attention"]
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"] == 0 and after["dtype"] == before["dtype"]
    for name, tensor in before["state"].items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_half_precision_model_gets_float32_maps(vit):
    model = copy.deepcopy(vit.model).to(torch.bfloat16)
    out = CheferExplainer(model, vit.processor).explain(images=random_image(12), targets=[1])
    assert out.grid_maps.dtype == torch.float32 and torch.isfinite(out.grid_maps).all()
    assert next(model.parameters()).dtype == torch.bfloat16


def test_make_explainer_and_errors(clip, vit):
    assert make_explainer("legrad", clip.model).score == "legrad"
    assert make_explainer("legrad_model_score", clip.model).score == "model"
    assert set(baselines.METHODS) == {"legrad", "legrad_model_score", *BASELINES}
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        make_explainer("lime", clip.model)
    with pytest.raises(TypeError, match="does not support Linear"):
        RolloutExplainer(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="targets"):
        RolloutExplainer(clip.model, clip.processor).explain(images=random_image(0), targets=[1])
    with pytest.raises(ValueError, match="image classifier"):
        RolloutExplainer(vit.model, vit.processor).explain(images=random_image(0), text=["a cat"])


def test_explained_layers(vit):
    for cls, layers in ((RawAttentionExplainer, [3]), (GradCAMExplainer, [3]), (RolloutExplainer, [0, 1, 2, 3])):
        out = cls(vit.model, vit.processor).explain(images=random_image(0), targets=[0])
        assert out.explained_layers == layers


def test_baselines_refuse_a_model_they_cannot_read():
    """AIMv2's pooling head is not SigLIP's: the baselines say so instead of failing inside the model."""
    from tiny_aimv2 import make_aimv2

    with pytest.raises(TypeError, match="explained by LeGrad only"):
        baselines.RawAttentionExplainer(make_aimv2().model)
