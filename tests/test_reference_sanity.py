"""The reference LeGrad is wired to the models as they really compute: quick checks against their own outputs."""

import pytest
import torch
import torch.nn.functional as F

from reference import classifier_logits, clip_feature, minmax, reference_grid_maps, siglip_head
from tiny_models import LABELS, NUM_LAYERS, random_image

PROMPTS = ["a photo of a red circle", "a photo of a cat"]
CLASSIFIERS = ["vit", "deit", "deit_teacher", "dinov2"]


def images(n=2, size=(48, 48)):
    return [random_image(seed, size) for seed in range(n)]


def text_embeds(tiny, prompts):
    tokens = tiny.processor.tokenizer(prompts, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        return tiny.model.get_text_features(**tokens).pooler_output


def siglip2_pixels(tiny):
    # A square and a 64x40 image: 6x6 and 5x7 patch grids, the second padded to 36 tokens.
    return dict(tiny.processor.image_processor([random_image(0), random_image(1, (64, 40))], return_tensors="pt"))


def check_maps(maps, shape):
    assert maps.shape == shape and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    for b in range(shape[0]):
        for k in range(shape[1]):
            assert maps[b, k].max() > 0


def test_minmax_constant_and_range():
    x = torch.stack([torch.full((3, 4), 2.5), torch.arange(12.0).view(3, 4)])[None]
    out = minmax(x)
    assert torch.equal(out[0, 0], torch.zeros(3, 4))
    assert out[0, 1].min() == 0 and out[0, 1].max() == 1


def test_siglip_manual_head_matches_pooler(siglip):
    px = siglip.processor.image_processor(images(), return_tensors="pt")
    vision = siglip.model.vision_model
    with torch.no_grad():
        out = vision(**px, output_hidden_states=True)
        pooled, probs = siglip_head(vision.head, vision.post_layernorm(out.hidden_states[-1]))
        embeds = siglip.model.get_image_features(**px).pooler_output
    torch.testing.assert_close(pooled, out.pooler_output, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled, embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 1))


def test_siglip2_manual_head_matches_pooler_with_padding(siglip2):
    px = siglip2_pixels(siglip2)
    assert px["spatial_shapes"].tolist() == [[6, 6], [5, 7]]
    assert px["pixel_attention_mask"].sum(-1).tolist() == [36, 35]
    vision = siglip2.model.vision_model
    valid = px["pixel_attention_mask"].bool()
    with torch.no_grad():
        out = vision(**px, output_hidden_states=True)
        pooled, probs = siglip_head(vision.head, vision.post_layernorm(out.hidden_states[-1]), valid)
    torch.testing.assert_close(pooled, out.pooler_output, rtol=1e-5, atol=1e-6)
    assert (probs[1, ..., 35] == 0).all()


@pytest.mark.parametrize("name", ["clip", "clip_vision_projection"])
def test_clip_cls_feature_reproduces_image_embeds(name, request):
    tiny = request.getfixturevalue(name)
    ip = getattr(tiny.processor, "image_processor", tiny.processor)
    px = ip(images(), return_tensors="pt")
    with torch.no_grad():
        out = tiny.model.vision_model(**px, output_hidden_states=True)
        feature = clip_feature(tiny.model, out.hidden_states[-1], "cls")
        embeds = tiny.model.get_image_features(**px).pooler_output if name == "clip" else tiny.model(**px).image_embeds
    assert len(out.hidden_states) == NUM_LAYERS + 1
    torch.testing.assert_close(feature, embeds, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_cls_head_reproduces_logits(name, request):
    tiny = request.getfixturevalue(name)
    px = tiny.processor(images(), return_tensors="pt")
    trunk = {"vit": "vit", "deit": "deit", "deit_teacher": "deit", "dinov2": "dinov2"}[name]
    with torch.no_grad():
        out = getattr(tiny.model, trunk)(**px, output_hidden_states=True)
        logits = classifier_logits(tiny.model, out.hidden_states[-1], "cls")
        expected = tiny.model(**px).logits
    assert len(out.hidden_states) == NUM_LAYERS + 1
    assert tiny.model.config.id2label[0] == LABELS[0]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_dual_encoder_maps(name, request):
    tiny = request.getfixturevalue(name)
    px = dict(tiny.processor.image_processor(images(), return_tensors="pt"))
    maps = reference_grid_maps(tiny.model, px, text_embeds=text_embeds(tiny, PROMPTS), layers=[2, 3])
    check_maps(maps, (2, 2, 6, 6))
    assert not torch.allclose(maps[:, 0], maps[:, 1])


def test_clip_vision_projection_matches_clip(clip, clip_vision_projection):
    px = dict(clip.processor.image_processor(images(), return_tensors="pt"))
    embeds = text_embeds(clip, PROMPTS)
    expected = reference_grid_maps(clip.model, px, text_embeds=embeds, layers=[1, 3])
    maps = reference_grid_maps(clip_vision_projection.model, px, text_embeds=embeds, layers=[1, 3])
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_maps(name, request):
    tiny = request.getfixturevalue(name)
    px = dict(tiny.processor(images(), return_tensors="pt"))
    maps = reference_grid_maps(tiny.model, px, targets=torch.tensor([[0, 1], [2, 3]]), layers=[2, 3])
    check_maps(maps, (2, 2, 6, 6))
    assert not torch.allclose(maps[:, 0], maps[:, 1])


def test_layer_sets_add_up_and_differ(clip):
    px = dict(clip.processor.image_processor(images(1), return_tensors="pt"))
    embeds = text_embeds(clip, PROMPTS[:1])
    per_layer = [reference_grid_maps(clip.model, px, text_embeds=embeds, layers=[i]) for i in range(NUM_LAYERS)]
    last2 = reference_grid_maps(clip.model, px, text_embeds=embeds, layers=[2, 3])
    every = reference_grid_maps(clip.model, px, text_embeds=embeds, layers=list(range(NUM_LAYERS)))
    some = reference_grid_maps(clip.model, px, text_embeds=embeds, layers=[0, 2])
    torch.testing.assert_close(last2, per_layer[2] + per_layer[3])
    torch.testing.assert_close(every, sum(per_layer))
    torch.testing.assert_close(some, per_layer[0] + per_layer[2])
    assert not torch.allclose(last2, every) and not torch.allclose(last2, some)


def test_reference_leaves_model_unchanged(vit):
    before = {k: v.clone() for k, v in vit.model.state_dict().items()}
    flags = [p.requires_grad for p in vit.model.parameters()]
    px = dict(vit.processor(images(1), return_tensors="pt"))
    reference_grid_maps(vit.model, px, targets=torch.tensor([[1]]), layers=[3])
    assert vit.model.config._attn_implementation == "sdpa" and not vit.model.training
    assert [p.requires_grad for p in vit.model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in vit.model.state_dict().items())


@pytest.mark.parametrize("name", ["clip", "vit"])
def test_reference_gradient_matches_sdpa_identity(name, request):
    """dS/dA from eager autograd equals (dS/dO) V^T taken on the untouched SDPA model (notes section 7)."""
    tiny = request.getfixturevalue(name)
    model, layer = tiny.model, 1
    if name == "clip":
        px = dict(tiny.processor.image_processor(images(1), return_tensors="pt"))
        embeds = F.normalize(text_embeds(tiny, PROMPTS[:1]), dim=-1)
        maps = reference_grid_maps(model, px, text_embeds=embeds, layers=[layer])
        attention, trunk = model.vision_model.encoder.layers[layer].self_attn, model.vision_model
        out_proj = attention.out_proj

        def score(hidden):
            return F.normalize(clip_feature(model, hidden[layer + 1]), dim=-1) @ embeds.T
    else:
        px = dict(tiny.processor(images(1), return_tensors="pt"))
        maps = reference_grid_maps(model, px, targets=torch.tensor([[2]]), layers=[layer])
        attention, trunk = model.vit.layers[layer].attention, model.vit
        out_proj = attention.o_proj

        def score(hidden):
            return classifier_logits(model, hidden[layer + 1])[:, 2]

    cache = {}
    handles = [
        attention.v_proj.register_forward_hook(lambda m, a, o: cache.__setitem__("v", o)),
        out_proj.register_forward_pre_hook(lambda m, a: cache.__setitem__("o", a[0])),
    ]
    try:
        out = trunk(**px, output_hidden_states=True)
        (grad_o,) = torch.autograd.grad(score(out.hidden_states).sum(), cache["o"])
    finally:
        for handle in handles:
            handle.remove()
    heads = model.config.vision_config.num_attention_heads if name == "clip" else model.config.num_attention_heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    grad_a = split(grad_o) @ split(cache["v"]).transpose(-1, -2)
    expected = grad_a.clamp(min=0).mean(dim=1).mean(dim=1)[:, 1:].view(1, 1, 6, 6)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-8)


def test_siglip_maps_and_correction(siglip):
    px = dict(siglip.processor.image_processor(images(), return_tensors="pt"))
    embeds = text_embeds(siglip, PROMPTS)
    null = text_embeds(siglip, ["a photo of a"])
    plain = reference_grid_maps(siglip.model, px, text_embeds=embeds, layers=[2, 3])
    corrected = reference_grid_maps(
        siglip.model, px, text_embeds=embeds, layers=[2, 3], correction=True, null_text_embeds=null
    )
    null_map = minmax(reference_grid_maps(siglip.model, px, text_embeds=null, layers=[2, 3]))
    zeroed = (null_map > 0.8).expand_as(plain)
    assert zeroed.any() and not zeroed.all()
    assert (corrected[zeroed] == 0).all()
    torch.testing.assert_close(corrected[~zeroed], plain[~zeroed])


def test_siglip2_maps_padding_and_correction(siglip2):
    px = siglip2_pixels(siglip2)
    embeds = text_embeds(siglip2, PROMPTS)
    null = text_embeds(siglip2, ["a photo of a"])
    maps = reference_grid_maps(siglip2.model, px, text_embeds=embeds, layers=[2, 3])
    assert maps.shape == (2, 2, 6, 7)
    assert (maps[0, :, :, 6] == 0).all() and (maps[1, :, 5, :] == 0).all()
    check_maps(maps[:1, :, :, :6], (1, 2, 6, 6))
    check_maps(maps[1:, :, :5, :], (1, 2, 5, 7))
    assert not torch.allclose(maps[:, 0], maps[:, 1])

    corrected = reference_grid_maps(
        siglip2.model, px, text_embeds=embeds, layers=[2, 3], correction=True, null_text_embeds=null
    )
    assert (corrected <= maps).all() and (corrected < maps).any()
    assert (corrected[0, :, :, 6] == 0).all() and (corrected[1, :, 5, :] == 0).all()


def test_non_native_size_interpolates(clip, dinov2):
    x = torch.nn.functional.interpolate(torch.randn(1, 3, 48, 48), size=(40, 64), mode="bilinear")
    embeds = text_embeds(clip, PROMPTS[:1])
    check_maps(reference_grid_maps(clip.model, {"pixel_values": x}, text_embeds=embeds, layers=[3]), (1, 1, 5, 8))
    maps = reference_grid_maps(dinov2.model, {"pixel_values": x}, targets=torch.tensor([[4]]), layers=[3])
    check_maps(maps, (1, 1, 5, 8))
