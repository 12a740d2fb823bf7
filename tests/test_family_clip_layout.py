"""Dual encoders with CLIP's vision layout: MetaCLIP 2 (with and without its text tower), AltCLIP, Chinese CLIP.

Tiny random models round-tripped with their processors (`tiny_clip_layout`): raw `grid_maps` and `layer_maps`
equal the independent reference (`reference_clip_layout`) for the default, all and an arbitrary set of layers,
1 and 3 prompts, a batch of 2 images and non-square inputs; prompts through the processor give the maps of the
model's own `text_embeds`; scores are the model's `logits_per_image`; bfloat16 maps follow float32; the model is
left as it was; the pipeline and the CLI load each dual encoder from its folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForZeroShotImageClassification, pipeline

import transformers_legrad  # noqa: F401  (registers the pipeline task)
from transformers_legrad import LeGradExplainer, LeGradExplanationPipeline
from transformers_legrad.adapters import adapter_for, registry
from transformers_legrad.cli import main

import tiny_clip_layout
from reference_clip_layout import reference_grid_maps
from test_exact import assert_raw_close
from tiny_models import IMAGE_SIZE, NUM_LAYERS, PROJECTION_DIM, random_image

FAMILIES = {  # fixture -> (class, adapter family, whether it has a text tower)
    "metaclip2": ("MetaClip2Model", "metaclip_2", True),
    "metaclip2_vision_projection": ("MetaClip2VisionModelWithProjection", "metaclip_2", False),
    "altclip": ("AltCLIPModel", "altclip", True),
    "chinese_clip": ("ChineseCLIPModel", "chinese_clip", True),
}
DUAL = [name for name, (_, _, text) in FAMILIES.items() if text]
LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "arbitrary": ([0, 2], [0, 2]),
}
PROMPTS = ["a photo of a cat", "a red circle", "a blue dog"]


@pytest.fixture(scope="session")
def metaclip2():
    return tiny_clip_layout.make_metaclip2()


@pytest.fixture(scope="session")
def metaclip2_vision_projection():
    return tiny_clip_layout.make_metaclip2_vision_with_projection()


@pytest.fixture(scope="session")
def altclip():
    return tiny_clip_layout.make_altclip()


@pytest.fixture(scope="session")
def chinese_clip():
    return tiny_clip_layout.make_chinese_clip()


def image_processor(tiny):
    return getattr(tiny.processor, "image_processor", None) or tiny.processor


def pixels_of(tiny, count: int = 2) -> torch.Tensor:
    images = [random_image(seed, (64, 48)) for seed in range(count)]
    return image_processor(tiny)(images=images, return_tensors="pt")["pixel_values"]


def random_embeds(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, PROJECTION_DIM, generator=torch.Generator().manual_seed(seed))


def model_outputs(tiny, prompts, images):
    """The model's own forward on processor outputs: (logits_per_image, text_embeds)."""
    inputs = tiny.processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = tiny.model(**inputs)
    return out.logits_per_image, out.text_embeds


# --- the family ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_each_class_is_explained_by_its_clip_layout_adapter(fixture, request):
    tiny = request.getfixturevalue(fixture)
    class_name, family, has_text = FAMILIES[fixture]
    assert type(tiny.model).__name__ == class_name
    adapter = adapter_for(tiny.model)
    assert adapter.spec.name == family and adapter.is_dual_encoder and adapter.has_text_tower == has_text
    assert adapter.num_prefix_tokens == 1 and adapter.embedding_dim == PROJECTION_DIM
    assert adapter.spec.blocks == "vision_model.encoder.layers" and len(adapter.blocks) == NUM_LAYERS


@pytest.mark.parametrize("family", ["metaclip_2", "altclip", "chinese_clip"])
def test_served_classes_are_what_the_zero_shot_auto_class_loads(family):
    """`pipeline_classes` are exactly the family's classes that AutoModelForZeroShotImageClassification maps."""
    spec = registry.families()[family]
    mapped = {
        getattr(transformers, name).__name__
        for name in spec.class_names
        if getattr(transformers, name).config_class in AutoModelForZeroShotImageClassification._model_mapping
        and AutoModelForZeroShotImageClassification._model_mapping[getattr(transformers, name).config_class].__name__
        == name
    }
    assert set(spec.served_classes) == mapped and spec.auto_class == "AutoModelForZeroShotImageClassification"
    assert registry.default_class(spec.model_types[0]) == spec.default_class == spec.main_class


# --- exact maps ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", list(FAMILIES))
@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("num_prompts", [1, 3])
def test_raw_maps_equal_the_reference(fixture, layer_case, num_prompts, request):
    tiny = request.getfixturevalue(fixture)
    layers, indices = LAYER_CASES[layer_case]
    pixel_values = pixels_of(tiny)
    text_embeds = random_embeds(num_prompts, seed=num_prompts)
    out = LeGradExplainer(tiny.model, layers=layers).explain(
        pixel_values=pixel_values, text_embeds=text_embeds, return_layer_maps=True
    )
    assert out.explained_layers == indices and out.grid_maps.shape == (2, num_prompts, 6, 6)
    assert_raw_close(out.grid_maps, reference_grid_maps(tiny.model, pixel_values, text_embeds, indices))
    for position, layer in enumerate(indices):
        assert_raw_close(
            out.layer_maps[:, :, position], reference_grid_maps(tiny.model, pixel_values, text_embeds, [layer])
        )


@pytest.mark.parametrize("fixture", list(FAMILIES))
@pytest.mark.parametrize("height, width", [(48, 32), (40, 64)])
def test_non_square_inputs_interpolate_positions_and_equal_the_reference(fixture, height, width, request):
    tiny = request.getfixturevalue(fixture)
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    text_embeds = random_embeds(3, seed=5)
    out = LeGradExplainer(tiny.model, layers="all").explain(pixel_values=pixel_values, text_embeds=text_embeds)
    assert out.grid_maps.shape == (2, 3, height // 8, width // 8) and out.heatmaps.shape[-2:] == (height, width)
    assert_raw_close(out.grid_maps, reference_grid_maps(tiny.model, pixel_values, text_embeds, list(range(NUM_LAYERS))))


# --- prompts and scores ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", DUAL)
def test_prompts_through_the_processor_give_the_maps_of_the_models_text_embeds(fixture, request):
    tiny = request.getfixturevalue(fixture)
    images = [random_image(seed, (64, 48)) for seed in range(2)]
    _, text_embeds = model_outputs(tiny, PROMPTS, images)
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    from_text = explainer.explain(images=images, text=PROMPTS)
    from_embeds = explainer.explain(images=images, text_embeds=text_embeds)
    assert from_text.grid_maps.abs().sum() > 0
    torch.testing.assert_close(from_text.grid_maps, from_embeds.grid_maps, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fixture", DUAL)
def test_scores_are_the_models_logits_per_image_and_probabilities_its_softmax(fixture, request):
    tiny = request.getfixturevalue(fixture)
    images = [random_image(seed, (64, 48)) for seed in range(2)]
    logits, _ = model_outputs(tiny, PROMPTS, images)
    assert tiny.model.logit_scale.exp() != 1  # the temperature is in the comparison
    out = LeGradExplainer(tiny.model, tiny.processor).explain(images=images, text=PROMPTS)
    torch.testing.assert_close(out.scores, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.probabilities, logits.softmax(dim=-1), rtol=1e-5, atol=1e-6)


def test_the_vision_tower_with_projection_explains_like_its_dual_encoder(metaclip2, metaclip2_vision_projection):
    """It has no text tower: the dual encoder's `text_embeds` give it the same maps, and its score is the cosine."""
    images = [random_image(seed, (64, 48)) for seed in range(2)]
    _, text_embeds = model_outputs(metaclip2, PROMPTS, images)
    pixel_values = pixels_of(metaclip2)
    dual = LeGradExplainer(metaclip2.model).explain(pixel_values=pixel_values, text_embeds=text_embeds)
    vision = LeGradExplainer(metaclip2_vision_projection.model).explain(
        pixel_values=pixel_values, text_embeds=text_embeds
    )
    torch.testing.assert_close(vision.grid_maps, dual.grid_maps, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(vision.scores * metaclip2.model.logit_scale.exp(), dual.scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="no text tower: pass `text_embeds`"):
        LeGradExplainer(metaclip2_vision_projection.model, metaclip2_vision_projection.processor).explain(
            images=images, text=PROMPTS
        )


def test_altclip_prompts_use_the_positions_after_robertas_offset(altclip):
    """XLM-R numbers positions from pad + 1: 16 of the tiny model's 18 position embeddings carry tokens."""
    adapter = adapter_for(altclip.model)
    assert altclip.model.config.text_config.max_position_embeddings == 18
    tokenizer = altclip.processor.tokenizer
    assert adapter.max_text_length(tokenizer) == 16
    tokenizer_without_limit = tiny_clip_layout.make_xlm_roberta_tokenizer(model_max_length=10**30)
    assert adapter.max_text_length(tokenizer_without_limit) == 16
    long_prompt = " ".join(["a photo of a red circle"] * 5)
    with pytest.warns(UserWarning, match="truncated"):
        out = LeGradExplainer(altclip.model, altclip.processor).explain(images=random_image(0), text=[long_prompt])
    assert torch.isfinite(out.grid_maps).all()


def test_chinese_clip_prompts_carry_one_segment_of_token_types(chinese_clip):
    """Chinese CLIP's BERT takes `token_type_ids`; a prompt is one segment (all zeros, as its tokenizer gives)."""
    encoded = chinese_clip.processor.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert not encoded["token_type_ids"].any()
    with torch.no_grad():
        ours = adapter_for(chinese_clip.model).text_features(
            transformers_legrad.adapters.TextInputs(encoded["input_ids"], encoded["attention_mask"])
        )
        theirs = chinese_clip.model.get_text_features(**encoded).pooler_output
        other_segment = chinese_clip.model.get_text_features(
            **{**encoded, "token_type_ids": torch.ones_like(encoded["input_ids"])}
        ).pooler_output
    torch.testing.assert_close(ours, theirs)
    assert not torch.allclose(ours, other_segment), "token types change nothing: the check would prove nothing"


def test_chinese_clip_takes_the_tokenizer_token_types(chinese_clip):
    """The explainer hands the tokenizer's `token_type_ids` to Chinese CLIP's text tower (`TextInputs.extra`)."""
    from transformers_legrad.adapters import TextInputs

    encoded = chinese_clip.processor.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    encoded["token_type_ids"] = torch.ones_like(encoded["input_ids"])  # a second segment: visibly different
    with torch.no_grad():
        ours = adapter_for(chinese_clip.model).text_features(TextInputs.from_encoding(encoded))
        theirs = chinese_clip.model.get_text_features(**encoded).pooler_output
    torch.testing.assert_close(ours, theirs)


# --- precision and side effects --------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_bfloat16_maps_follow_float32(fixture, request):
    tiny = request.getfixturevalue(fixture)
    pixel_values = pixels_of(tiny)
    text_embeds = random_embeds(3, seed=11)
    full = LeGradExplainer(tiny.model, layers="all").explain(pixel_values=pixel_values, text_embeds=text_embeds)
    half_model = type(tiny.model).from_pretrained(tiny.path, dtype=torch.bfloat16).eval()
    half = LeGradExplainer(half_model, layers="all").explain(pixel_values=pixel_values, text_embeds=text_embeds)
    for b in range(2):
        for k in range(3):
            stacked = torch.stack([half.grid_maps[b, k].flatten().float(), full.grid_maps[b, k].flatten()])
            assert torch.corrcoef(stacked)[0, 1] >= 0.99


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_the_model_is_left_untouched(fixture, request):
    tiny = request.getfixturevalue(fixture)
    model = type(tiny.model).from_pretrained(tiny.path)  # a private copy: its flags are changed below
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    implementation = model.config._attn_implementation
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    LeGradExplainer(model, layers="all").explain(pixel_values=pixels_of(tiny), text_embeds=random_embeds(2, seed=3))
    assert model.training and all(module.training for module in model.modules())
    assert model.config._attn_implementation == implementation == "sdpa"
    assert model.vision_model.config._attn_implementation == "sdpa"
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)


# --- pipeline and CLI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", DUAL)
def test_pipeline_loads_the_folder_as_its_dual_encoder(fixture, request):
    tiny = request.getfixturevalue(fixture)
    pipe = pipeline("legrad-explanation", model=tiny.path)
    assert isinstance(pipe, LeGradExplanationPipeline) and type(pipe.model).__name__ == FAMILIES[fixture][0]
    image = random_image(0, (80, 50))
    results = pipe(image, candidate_labels=PROMPTS)
    assert sorted(entry["label"] for entry in results) == sorted(PROMPTS)
    scores = [entry["score"] for entry in results]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    for entry in results:
        assert entry["heatmap"].mode == "L" and entry["heatmap"].size == image.size
        assert entry["overlay"].mode == "RGB" and entry["overlay"].size == image.size


@pytest.mark.parametrize("fixture", DUAL)
def test_cli_explains_a_folder_with_prompts(fixture, request, tmp_path, capsys):
    tiny = request.getfixturevalue(fixture)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        random_image(index, (64, 48)).save(images / f"scene {index}.png")
    out = tmp_path / "out"
    argv = ["explain", str(images), "--model", tiny.path, "--prompt", "a cat", "--prompt", "a red circle"]
    code = main([*argv, "--out", str(out), "--image-size", str(IMAGE_SIZE)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 4 and {record["label"] for record in records} == {"a cat", "a red circle"}
    assert "wrote maps for 2 image(s)" in captured.out


def test_the_tiny_wordpiece_tokenizer_gives_the_same_ids_in_every_process():
    """Chinese CLIP's and BLIP's tiny tokenizer: the same prompt gets the same ids in fresh processes and here (a
    trained WordPiece vocabulary differed from one process to the next, and the tiny models' scores with it)."""
    code = "import tiny_clip_layout as t; print(t.make_wordpiece_tokenizer()(PROMPTS)['input_ids'])"
    code = code.replace("PROMPTS", repr(PROMPTS))
    runs = [
        subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    here = str(tiny_clip_layout.make_wordpiece_tokenizer()(PROMPTS)["input_ids"])
    assert [run.stdout.strip() for run in runs] == [here, here]
