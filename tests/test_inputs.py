"""Raw inputs through the processor, `image_size`, targets by name, scores, and the heatmap post-processing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformers_legrad import LeGradExplainer

from reference import minmax, reference_grid_maps
from test_exact import assert_maps_match
from tiny_models import random_image

PROMPTS = ["a photo of a red circle", "a photo of a cat", "a blue dog"]


def text_embeddings(tiny, prompts, **tokenizer_kwargs):
    """The prompts' embeddings computed here, independently of the explainer."""
    tokens = tiny.processor.tokenizer(prompts, return_tensors="pt", **tokenizer_kwargs)
    with torch.no_grad():
        return tiny.model.get_text_features(**tokens).pooler_output


def images(count=2):
    return [random_image(seed, (60, 52)) for seed in range(count)]


def test_clip_text_and_images_through_the_processor(clip):
    out = LeGradExplainer(clip.model, clip.processor).explain(images=images(), text=PROMPTS)
    processed = clip.processor(images=images(), text=PROMPTS, padding=True, return_tensors="pt")
    embeds = text_embeddings(clip, PROMPTS, padding=True)
    by_tensors = LeGradExplainer(clip.model).explain(pixel_values=processed["pixel_values"], text_embeds=embeds)
    torch.testing.assert_close(out.grid_maps, by_tensors.grid_maps, rtol=1e-5, atol=1e-7)
    assert out.labels == PROMPTS
    with torch.no_grad():
        logits = clip.model(**processed).logits_per_image
    torch.testing.assert_close(out.scores, logits, rtol=1e-5, atol=1e-5)


def test_siglip_pads_prompts_to_max_length_and_corrects_with_the_null_prompt(siglip):
    out = LeGradExplainer(siglip.model, siglip.processor).explain(images=images(), text=PROMPTS)
    length = siglip.model.config.text_config.max_position_embeddings
    embeds = text_embeddings(siglip, PROMPTS, padding="max_length", max_length=length)
    null = text_embeddings(siglip, ["a photo of a"], padding="max_length", max_length=length)
    pixels = siglip.processor.image_processor(images=images(), return_tensors="pt")
    expected = reference_grid_maps(
        siglip.model, dict(pixels), text_embeds=embeds, layers=[2, 3], correction=True, null_text_embeds=null
    )
    assert_maps_match(out.grid_maps, expected)
    with torch.no_grad():
        tokens = siglip.processor.tokenizer(PROMPTS, padding="max_length", max_length=length, return_tensors="pt")
        logits = siglip.model(pixel_values=pixels["pixel_values"], **tokens).logits_per_image
    torch.testing.assert_close(out.scores, logits, rtol=1e-5, atol=1e-5)


def test_siglip2_naflex_batch_through_the_processor(siglip2):
    pictures = [random_image(0, (48, 48)), random_image(1, (80, 32))]
    out = LeGradExplainer(siglip2.model, siglip2.processor).explain(images=pictures, text=PROMPTS[:2])
    (h0, w0), (h1, w1) = out.grid_shapes
    assert (h0, w0) != (h1, w1) and h1 < w1, out.grid_shapes
    assert out.heatmaps.shape == (2, 2, 8 * max(h0, h1), 8 * max(w0, w1))
    for b, (h, w) in enumerate(out.grid_shapes):
        inside = out.heatmaps[b, :, : 8 * h, : 8 * w]
        assert inside.amin(dim=(-2, -1)).eq(0).all() and inside.amax(dim=(-2, -1)).eq(1).all()
        assert out.heatmaps[b, :, 8 * h :, :].eq(0).all() and out.heatmaps[b, :, :, 8 * w :].eq(0).all()
        assert out.grid_maps[b, :, h:, :].eq(0).all() and out.grid_maps[b, :, :, w:].eq(0).all()


@pytest.mark.parametrize("family", ["clip", "siglip", "vit", "deit", "dinov2"])
@pytest.mark.parametrize("image_size, grid", [(64, (8, 8)), ((40, 56), (5, 7))])
def test_image_size_explains_at_another_resolution(family, image_size, grid, request):
    tiny = request.getfixturevalue(family)
    kwargs = {"text": PROMPTS[:2]} if family in ("clip", "siglip") else {}
    out = LeGradExplainer(tiny.model, tiny.processor).explain(images=images(), image_size=image_size, **kwargs)
    assert out.grid_shapes == [grid, grid]
    assert out.grid_maps.shape[-2:] == grid
    assert out.heatmaps.shape[-2:] == (grid[0] * 8, grid[1] * 8)
    assert torch.isfinite(out.heatmaps).all() and out.grid_maps.abs().sum() > 0


def test_siglip2_image_size_sets_the_patch_budget(siglip2):
    out = LeGradExplainer(siglip2.model, siglip2.processor).explain(
        images=[random_image(0, (48, 48))], text=PROMPTS[:1], image_size=32
    )
    assert out.grid_shapes == [(4, 4)]


def test_classifier_targets_by_label_name_equal_ids(vit):
    explainer = LeGradExplainer(vit.model, vit.processor)
    by_name = explainer.explain(images=images(), targets=["dog", "frog"])
    by_id = explainer.explain(images=images(), targets=[1, 4])
    torch.testing.assert_close(by_name.grid_maps, by_id.grid_maps)
    by_id_text = explainer.explain(images=images(), targets=["1", "4"])  # ids typed on a command line or in a column
    torch.testing.assert_close(by_id_text.grid_maps, by_id.grid_maps)
    assert by_name.labels == ["dog", "frog"]
    per_image = explainer.explain(images=images(), targets=torch.tensor([[1, 4], [4, 1]]))
    torch.testing.assert_close(per_image.grid_maps[0], by_id.grid_maps[0])
    torch.testing.assert_close(per_image.grid_maps[1], by_id.grid_maps[1].flip(0))
    assert per_image.labels == [["dog", "frog"], ["frog", "dog"]]


def test_default_top1_labels_follow_each_image(vit):
    pictures = [random_image(seed) for seed in range(6)]
    out = LeGradExplainer(vit.model, vit.processor).explain(images=pictures)
    names = [vit.model.config.id2label[int(i)] for i in out.target_ids[:, 0]]
    if len(set(names)) > 1:
        assert out.labels == [[name] for name in names]
    else:
        assert out.labels == names[:1]


def test_clip_vision_with_projection_scores_are_cosines(clip_vision_projection, clip):
    pixels = clip.processor.image_processor(images=images(), return_tensors="pt")["pixel_values"]
    embeds = text_embeddings(clip, PROMPTS, padding=True)
    out = LeGradExplainer(clip_vision_projection.model).explain(pixel_values=pixels, text_embeds=embeds)
    with torch.no_grad():
        image_embeds = clip_vision_projection.model(pixel_values=pixels).image_embeds
    expected = F.normalize(image_embeds, dim=-1) @ F.normalize(embeds, dim=-1).T
    torch.testing.assert_close(out.scores, expected, rtol=1e-5, atol=1e-5)
    full = LeGradExplainer(clip.model).explain(pixel_values=pixels, text_embeds=embeds)
    torch.testing.assert_close(out.grid_maps, full.grid_maps)


def test_heatmaps_are_the_upsampled_grid_maps_min_max_normalized(clip):
    out = LeGradExplainer(clip.model, clip.processor).explain(images=images(), text=PROMPTS)
    upsampled = F.interpolate(out.grid_maps, size=(48, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.heatmaps, minmax(upsampled))
    assert out.heatmaps.dtype == torch.float32
    assert out.heatmaps.amin(dim=(-2, -1)).eq(0).all() and out.heatmaps.amax(dim=(-2, -1)).eq(1).all()


def test_call_is_explain_and_layers_at_call_time_override_the_constructor(clip):
    explainer = LeGradExplainer(clip.model, clip.processor, layers="all")
    assert explainer(images=images(1), text="a cat").explained_layers == [0, 1, 2, 3]
    assert explainer.explain(images=images(1), text="a cat", layers=1).explained_layers == [3]
    assert explainer.explain(images=images(1), text="a cat", layers=[-1, 0, 0]).explained_layers == [0, 3]


@pytest.mark.parametrize("family", ["clip", "siglip", "vit"])
def test_score_model_uses_the_models_own_pooling(family, request):
    """With `score="model"` the last layer's readout is the model's own: its map explains the final score."""
    tiny = request.getfixturevalue(family)
    kwargs = {"text": PROMPTS[:2]} if family != "vit" else {"targets": [0, 1]}
    if family == "siglip":
        kwargs["correction"] = False
    legrad = LeGradExplainer(tiny.model, tiny.processor, layers=1).explain(images=images(), **kwargs)
    model = LeGradExplainer(tiny.model, tiny.processor, layers=1, score="model").explain(images=images(), **kwargs)
    assert torch.isfinite(model.grid_maps).all() and model.grid_maps.abs().sum() > 0
    assert not torch.allclose(minmax(legrad.grid_maps), minmax(model.grid_maps), atol=1e-3)


def test_score_model_last_layer_explains_clips_own_score(clip):
    """CLIP with `score="model"`: the last layer's map is that of CLIP's own CLS-pooled cosine score."""
    import copy

    pixels = clip.processor.image_processor(images=images(1), return_tensors="pt")["pixel_values"]
    embeds = torch.nn.functional.normalize(text_embeddings(clip, PROMPTS[:1], padding=True), dim=-1)
    out = LeGradExplainer(clip.model, layers=1, score="model").explain(pixel_values=pixels, text_embeds=embeds)
    eager = copy.deepcopy(clip.model)
    eager.set_attn_implementation("eager")
    vision = eager.vision_model(pixel_values=pixels, output_attentions=True)
    score = (F.normalize(eager.visual_projection(vision.pooler_output), dim=-1) * embeds).sum()
    (grad,) = torch.autograd.grad(score, vision.attentions[-1])
    expected = grad.clamp(min=0).mean(dim=(1, 2))[:, 1:].reshape(1, 1, 6, 6)
    assert_maps_match(out.grid_maps, expected)


def test_top_k_explains_each_images_most_probable_classes(vit):
    pictures = images(3)
    pixel_values = vit.processor(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = vit.model(pixel_values=pixel_values).logits
    out = LeGradExplainer(vit.model, vit.processor).explain(images=pictures, top_k=3)
    top = logits.topk(3, dim=-1)
    assert torch.equal(out.target_ids, top.indices)
    torch.testing.assert_close(out.scores, top.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.probabilities, logits.softmax(-1).gather(1, top.indices), rtol=1e-5, atol=1e-6)
    alone = LeGradExplainer(vit.model).explain(pixel_values=pixel_values, targets=out.target_ids)
    torch.testing.assert_close(out.grid_maps, alone.grid_maps)


def test_probabilities_follow_the_zero_shot_pipeline(clip, siglip):
    for tiny, to_probability in ((clip, lambda s: s.softmax(-1)), (siglip, torch.sigmoid)):
        out = LeGradExplainer(tiny.model, tiny.processor).explain(images=images(), text=PROMPTS)
        torch.testing.assert_close(out.probabilities, to_probability(out.scores))


@pytest.mark.parametrize("top_k, message", [(0, "from 1 to 5"), (6, "from 1 to 5"), (True, "from 1 to 5")])
def test_top_k_errors(vit, top_k, message):
    with pytest.raises(ValueError, match=message):
        LeGradExplainer(vit.model).explain(pixel_values=torch.randn(1, 3, 48, 48), top_k=top_k)
    with pytest.raises(ValueError, match="not both"):
        LeGradExplainer(vit.model).explain(pixel_values=torch.randn(1, 3, 48, 48), top_k=2, targets=[1])
