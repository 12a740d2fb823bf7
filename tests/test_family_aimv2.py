"""AIMv2 (`Aimv2Model` with prompts, `Aimv2VisionModel` along directions, with or without its head): raw maps and text
relevance against the independent reference of `reference_aimv2.py`, layer choices, batches, input sizes, bf16,
side effects, errors, the pipeline and the CLI."""

from __future__ import annotations

import copy
import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Aimv2Config, Aimv2Model, Aimv2VisionModel, pipeline

from transformers_legrad import LeGradExplainer
from transformers_legrad.adapters import TextInputs, adapter_for
from transformers_legrad.adapters.aimv2 import Aimv2Adapter, Aimv2VisionAdapter
from transformers_legrad.cli import main

from reference_aimv2 import aimv2_head, reference_grid_maps, reference_text_relevance, vision_tower
from test_engine import assert_same_state, model_state
from test_exact import assert_raw_close
from tiny_aimv2 import make_aimv2, make_aimv2_vision
from tiny_models import IMAGE_SIZE, NUM_LAYERS, PROJECTION_DIM, random_image

PROMPTS = ["a photo of a red circle", "a cat", "a photo of a blue square next to a green triangle"]
LAYERS = {
    "last-2": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "0,2": ([0, 2], [0, 2]),
}
#: name -> factory keyword arguments (None: the dual encoder)
MODELS = {
    "dual": None,
    "vision_head": {},
    "vision_no_head": {"use_head": False},
    "vision_native": {"is_native": True},
}


@functools.cache
def tiny(name: str):
    kwargs = MODELS[name]
    return make_aimv2() if kwargs is None else make_aimv2_vision(**kwargs)


def images(count: int = 2):
    return [random_image(seed, (IMAGE_SIZE, IMAGE_SIZE)) for seed in range(count)]


def pixel_values(name: str, pictures) -> torch.Tensor:
    processor = tiny(name).processor
    image_processor = getattr(processor, "image_processor", processor)
    return image_processor(images=pictures, return_tensors="pt")["pixel_values"]


def random_directions(name: str, count: int) -> torch.Tensor:
    dim = PROJECTION_DIM if name == "dual" else tiny(name).model.config.hidden_size
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(count))


def text_embeds(prompts: list[str]) -> torch.Tensor:
    """The dual encoder's own normalized text embeddings of `prompts` [K, dim], from its causal text tower (eager
    attention: under SDPA transformers runs unpadded prompts both ways, see the text-side tests)."""
    model, tokenizer = copy.deepcopy(tiny("dual").model), tiny("dual").processor.tokenizer
    model.set_attn_implementation("eager")
    with torch.no_grad():
        features = model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt"))
    return F.normalize(features.pooler_output, dim=-1)


def explain(name: str, count: int, **kwargs):
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor, layers=kwargs.pop("layers", None))
    if name == "dual":
        return explainer.explain(images=images(), text=PROMPTS[:count], **kwargs), text_embeds(PROMPTS[:count])
    directions = random_directions(name, count)
    return explainer.explain(images=images(), directions=directions, **kwargs), directions


# --- the adapters and the reference --------------------------------------------------------------------------------
def test_each_class_gets_its_aimv2_adapter():
    assert type(adapter_for(tiny("dual").model)) is Aimv2Adapter
    for name in ("vision_head", "vision_no_head"):
        adapter = adapter_for(tiny(name).model)
        assert type(adapter) is Aimv2VisionAdapter and adapter.num_prefix_tokens == 0
        assert adapter.explains_pooling_head == (name == "vision_head")


@pytest.mark.parametrize("name", ["dual", "vision_head"])
def test_the_reference_head_is_the_models_own(name):
    """The head written out (explicit softmax, `cls_token` as the query) gives the model's `pooler_output`."""
    tower = vision_tower(tiny(name).model)
    with torch.no_grad():
        out = tower(pixel_values=pixel_values(name, images()))
        pooled, probs = aimv2_head(tower.head, out.last_hidden_state)
    torch.testing.assert_close(pooled, out.pooler_output, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(2, 4, 1))


# --- exact maps ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("layers", list(LAYERS))
@pytest.mark.parametrize("name", ["dual", "vision_head", "vision_no_head"])
def test_grid_maps_equal_the_reference(name, layers, count):
    spec, indices = LAYERS[layers]
    out, directions = explain(name, count, layers=spec, return_layer_maps=True)
    ref = reference_grid_maps(tiny(name).model, pixel_values(name, images()), directions, indices)
    assert out.grid_maps.shape == (2, count, 6, 6) and out.explained_layers == indices
    assert_raw_close(out.grid_maps, ref)
    assert out.layer_maps.shape == (2, count, len(indices), 6, 6)
    for position, layer in enumerate(indices):
        assert_raw_close(
            out.layer_maps[:, :, position],
            reference_grid_maps(tiny(name).model, pixel_values(name, images()), directions, [layer]),
        )


@pytest.mark.parametrize("name", ["dual", "vision_head"])
def test_the_head_reads_the_normalized_tokens_not_the_raw_ones(name):
    """The readout's choice is visible: the raw-token variant of the reference gives other maps."""
    out, directions = explain(name, 2, layers="all")
    raw = reference_grid_maps(
        tiny(name).model, pixel_values(name, images()), directions, list(range(NUM_LAYERS)), raw_tokens=True
    )
    with pytest.raises(AssertionError):
        assert_raw_close(out.grid_maps, raw)


@pytest.mark.parametrize("name", ["dual", "vision_head", "vision_no_head"])
def test_model_score_equals_the_reference(name):
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor, layers="all", score="model")
    directions = text_embeds(PROMPTS[:2]) if name == "dual" else random_directions(name, 2)
    given = {"text_embeds": directions} if name == "dual" else {"directions": directions}
    out = explainer.explain(images=images(), **given)
    ref = reference_grid_maps(
        tiny(name).model, pixel_values(name, images()), directions, list(range(NUM_LAYERS)), score="model"
    )
    assert_raw_close(out.grid_maps, ref)
    legrad = LeGradExplainer(tiny(name).model, tiny(name).processor, layers="all").explain(images=images(), **given)
    if name == "vision_no_head":  # the token-mean readout differs from the model's mean of normalized tokens
        assert not torch.allclose(out.grid_maps, legrad.grid_maps)
    else:  # with a head both scores read head(rms_norm(Z))
        torch.testing.assert_close(out.grid_maps, legrad.grid_maps)


def test_scores_are_the_models_clamped_logits_per_image():
    model = copy.deepcopy(tiny("dual").model)
    processor = tiny("dual").processor
    inputs = processor(text=PROMPTS, images=images(), return_tensors="pt", padding=True)
    for logit_scale in (2.0, math.log(500.0)):  # inside, then above the model's clamp at log(100)
        with torch.no_grad():
            model.logit_scale.fill_(logit_scale)
            expected = model(**inputs).logits_per_image
        out = LeGradExplainer(model, processor).explain(images=images(), text=PROMPTS)
        torch.testing.assert_close(out.scores, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.probabilities, expected.softmax(dim=-1), rtol=1e-4, atol=1e-5)


def test_scores_are_the_causal_logits_that_eager_attention_gives():
    """As the card says: an unpadded prompt's `out.scores` are the eager model's (causal) `logits_per_image`, which
    the SDPA model's own forward misses (it runs such prompts both ways)."""
    model, processor = tiny("dual").model, tiny("dual").processor
    prompts = ["a photo of a red circle"]
    inputs = processor(text=prompts, images=images(), return_tensors="pt")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    sdpa = copy.deepcopy(model)
    sdpa.set_attn_implementation("sdpa")
    with torch.no_grad():
        causal, both_ways = (variant(**inputs).logits_per_image for variant in (eager, sdpa))
    out = LeGradExplainer(sdpa, processor).explain(images=images(), text=prompts)
    torch.testing.assert_close(out.scores, causal, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out.scores, both_ways, rtol=0, atol=1e-4)
    assert "eager" in " ".join(adapter_for(model).spec.reading_notes)


@pytest.mark.parametrize("name", ["vision_head", "vision_no_head"])
def test_a_reference_image_points_at_itself(name):
    model, processor = tiny(name).model, tiny(name).processor
    query, other = images()
    out = LeGradExplainer(model, processor).explain(images=[query, other], reference_images=[query, other])
    torch.testing.assert_close(out.scores.diagonal(), torch.ones(2), rtol=0, atol=1e-5)
    with torch.no_grad():
        output = model(pixel_values=pixel_values(name, [query, other]))
    own = output.pooler_output if name == "vision_head" else output.last_hidden_state.mean(dim=1)
    torch.testing.assert_close(out.scores, F.normalize(own, dim=-1) @ F.normalize(own, dim=-1).T, rtol=1e-4, atol=1e-5)


# --- input sizes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(48, 64), (40, 32)])
def test_native_resolution_towers_take_any_size_and_equal_the_reference(height, width):
    name = "vision_native"
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor, layers="all")
    directions = random_directions(name, 2)
    out = explainer.explain(images=images(), directions=directions, image_size=(height, width))
    assert out.grid_maps.shape == (2, 2, height // 8, width // 8)
    pixels = tiny(name).processor(
        images=images(),
        return_tensors="pt",
        **adapter_for(tiny(name).model).processor_size_kwargs(tiny(name).processor, (height, width)),
    )["pixel_values"]
    assert tuple(pixels.shape[-2:]) == (height, width)
    assert_raw_close(out.grid_maps, reference_grid_maps(tiny(name).model, pixels, directions, list(range(NUM_LAYERS))))


@pytest.mark.parametrize("name", ["dual", "vision_head"])
def test_learned_position_embeddings_refuse_other_sizes(name):
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor)
    given = {"text": ["a cat"]} if name == "dual" else {"directions": random_directions(name, 1)}
    message = r"learned for 48x48 inputs .* cannot take `pixel_values` of 48x64.*native-resolution"
    with pytest.raises(ValueError, match=message):
        explainer.explain(images=images(1), image_size=(48, 64), **given)
    with pytest.raises(ValueError, match="cannot take `pixel_values` of 64x64"):
        explainer.explain(pixel_values=torch.zeros(1, 3, 64, 64), **given)


# --- text side -----------------------------------------------------------------------------------------------------
def test_text_relevance_equals_the_reference():
    model, processor = tiny("dual").model, tiny("dual").processor
    explainer = LeGradExplainer(model, processor)
    out = explainer.explain(images=images(), text=PROMPTS, text_relevance=True)
    tokenizer = processor.tokenizer
    encoded = tokenizer(PROMPTS, return_tensors="pt", **explainer.adapter.tokenizer_kwargs(tokenizer))
    assert encoded["attention_mask"].min() == 0, "the prompts should need padding"
    with torch.no_grad():
        embeds = F.normalize(
            model.get_image_features(pixel_values=pixel_values("dual", images())).pooler_output, dim=-1
        )
    ref = reference_text_relevance(
        model, encoded["input_ids"], encoded["attention_mask"], embeds, out.explained_text_layers
    )
    assert out.text_relevance.shape == (2, len(PROMPTS), encoded["input_ids"].shape[1])
    assert_raw_close(out.text_relevance, ref)
    assert (out.text_relevance[:, ~encoded["attention_mask"].bool()] == 0).all()
    assert [token.text for token in out.text_tokens[1] if not token.special] == PROMPTS[1].split()


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_unpadded_prompts_stay_causal_under_every_attention(implementation):
    """`Aimv2TextModel` is causal only through its mask, which SDPA drops when no prompt is padded: the adapter
    passes a prepared causal mask, so a single prompt's text relevance and scores equal the eager reference."""
    model = copy.deepcopy(tiny("dual").model)
    model.set_attn_implementation(implementation)
    tokenizer = tiny("dual").processor.tokenizer
    prompts = ["a photo of a red circle"]
    encoded = tokenizer(prompts, return_tensors="pt")
    adapter = adapter_for(model)
    with torch.no_grad():
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
        causal = eager.get_text_features(**encoded).pooler_output
        both_ways = model.get_text_features(input_ids=encoded["input_ids"]).pooler_output
        for mask in (None, encoded["attention_mask"]):
            torch.testing.assert_close(adapter.text_features(TextInputs(encoded["input_ids"], mask)), causal)
    if implementation == "sdpa":  # what transformers' SDPA path computes without padding: both ways
        assert not torch.allclose(both_ways, causal, rtol=0, atol=1e-7)
    out = LeGradExplainer(model, tiny("dual").processor).explain(images=images(), text=prompts, text_relevance=True)
    with torch.no_grad():
        embeds = F.normalize(
            model.get_image_features(pixel_values=pixel_values("dual", images())).pooler_output, dim=-1
        )
    ref = reference_text_relevance(model, encoded["input_ids"], encoded["attention_mask"], embeds, [0, 1])
    assert_raw_close(out.text_relevance, ref)


# --- precision and side effects ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dual", "vision_no_head"])
def test_bfloat16_maps_follow_float32(name):
    directions = text_embeds(PROMPTS) if name == "dual" else random_directions(name, 3)
    given = {"text_embeds": directions} if name == "dual" else {"directions": directions}
    pixels = pixel_values(name, images())
    full = LeGradExplainer(tiny(name).model, layers="all").explain(pixel_values=pixels, **given)
    half_model = type(tiny(name).model).from_pretrained(tiny(name).path, dtype=torch.bfloat16).eval()
    half = LeGradExplainer(half_model, layers="all").explain(pixel_values=pixels, **given)
    assert torch.isfinite(half.grid_maps).all()
    for b in range(2):
        for k in range(3):
            stacked = torch.stack([half.grid_maps[b, k].flatten().float(), full.grid_maps[b, k].flatten()])
            assert torch.corrcoef(stacked)[0, 1] >= 0.99


@pytest.mark.parametrize("name", ["dual", "vision_no_head"])
def test_the_model_is_left_untouched(name):
    model = tiny(name).model
    before = model_state(model)
    explainer = LeGradExplainer(model, tiny(name).processor, layers="all")
    if name == "dual":
        explainer.explain(images=images(), text=PROMPTS, text_relevance=True, return_layer_maps=True)
    else:
        explainer.explain(images=images(), reference_images=images(1), return_layer_maps=True)
    assert_same_state(before, model_state(model))


# --- errors --------------------------------------------------------------------------------------------------------
def test_a_dual_encoder_without_its_pooling_head_is_refused():
    config = Aimv2Config(**{**tiny("dual").model.config.to_dict()})
    config.vision_config.use_head = False
    model = Aimv2Model(config).eval()
    with pytest.raises(
        TypeError, match=r"no attention-pooling head \(`vision_config.use_head=False`\).*Aimv2VisionModel"
    ):
        LeGradExplainer(model)


# --- pipeline and CLI ----------------------------------------------------------------------------------------------
def test_pipeline_loads_the_dual_encoder_folder_and_explains_prompts():
    pipe = pipeline("legrad-explanation", model=tiny("dual").path)
    assert type(pipe.model) is Aimv2Model
    image = random_image(0, (80, 50))
    results = pipe(image, candidate_labels=PROMPTS)
    assert sorted(entry["label"] for entry in results) == sorted(PROMPTS)
    assert abs(sum(entry["score"] for entry in results) - 1) < 1e-5
    assert all(entry["heatmap"].size == image.size for entry in results)


def test_pipeline_loads_the_vision_tower_as_itself():
    pipe = pipeline("legrad-explanation", model=tiny("vision_head").path)
    assert type(pipe.model) is Aimv2VisionModel
    query, other = images()
    results = pipe([query, other], reference_images=[query], labels=["me"])
    assert results[0][0]["label"] == "me" and results[0][0]["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["dual", "vision_no_head"])
def test_cli_explains_with_prompts_or_references(name, tmp_path, capsys):
    for index, picture in enumerate(images()):
        picture.save(tmp_path / f"image{index}.png")
    which = (
        ["--prompt", "a cat", "--prompt", "a red circle"]
        if name == "dual"
        else ["--reference", tmp_path / "image1.png"]
    )
    argv = ["explain", tmp_path / "image0.png", "--model", tiny(name).path, *which, "--out", tmp_path / "out"]
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads((tmp_path / "out" / "results.json").read_text())
    expected = {"a cat", "a red circle"} if name == "dual" else {"image1"}
    assert {record["label"] for record in records} == expected
    assert (tmp_path / "out" / records[0]["overlay"]).is_file()
