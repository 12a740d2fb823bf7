"""BLIP image-text retrieval (`BlipForImageTextRetrieval`): the matching head (ITM, default) and the cosine (ITC).

A tiny random model round-tripped with its `BlipProcessor` (`tiny_blip`): raw `grid_maps` and `layer_maps` equal
the independent reference (`reference_blip`, the vision tower by hand from its fused Q/K/V) for both readouts, the
default, all and an arbitrary set of layers, 1 and 3 prompts, a batch of 2 images and non-square inputs; scores and
probabilities are what the model's forward gives; bfloat16 maps follow float32; the model is left as it was; the
pipeline and the CLI load the folder as `BlipForImageTextRetrieval`; bad options and inputs raise.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import BlipForImageTextRetrieval, pipeline

from transformers_legrad import LeGradExplainer, LeGradExplanationPipeline, engine
from transformers_legrad.adapters import adapter_for
from transformers_legrad.cli import main

import tiny_blip
from reference_blip import reference_grid_maps, vision_states
from test_exact import assert_raw_close
from tiny_blip import NUM_LAYERS
from tiny_models import IMAGE_SIZE, PROJECTION_DIM, random_image

LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "arbitrary": ([0, 2], [0, 2]),
}
PROMPTS = ["a photo of a cat", "a red circle", "a blue dog"]
READOUTS = {"itm": True, "itc": False}  # reference readout -> use_itm_head


@pytest.fixture(scope="module")
def blip():
    return tiny_blip.make_blip()


def pixels_of(tiny, count: int = 2) -> torch.Tensor:
    images = [random_image(seed, (64, 48)) for seed in range(count)]
    return tiny.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


def tokenized(tiny, prompts):
    adapter = adapter_for(tiny.model)
    return tiny.processor.tokenizer(prompts, return_tensors="pt", **adapter.tokenizer_kwargs(tiny.processor.tokenizer))


def text_embeds_of(tiny, prompts) -> torch.Tensor:
    """The model's own ITC text embeddings: `text_proj` of the text encoder's first token, normalized."""
    encoded = tokenized(tiny, prompts)
    with torch.no_grad():
        hidden = tiny.model.text_encoder(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        return F.normalize(tiny.model.text_proj(hidden.last_hidden_state[:, 0]), dim=-1)


def reference(tiny, pixel_values, prompts, layers, readout):
    encoded = tokenized(tiny, prompts)
    return reference_grid_maps(
        tiny.model,
        pixel_values,
        layers,
        readout=readout,
        text_embeds=text_embeds_of(tiny, prompts) if readout != "itm" else None,
        input_ids=encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
    )


# --- the family ------------------------------------------------------------------------------------------------
def test_the_retrieval_model_is_explained_by_the_blip_adapter(blip):
    assert type(blip.model) is BlipForImageTextRetrieval
    itm, itc = adapter_for(blip.model), adapter_for(blip.model, use_itm_head=False)
    assert itm.spec.name == "blip" and itm.is_dual_encoder and itm.has_text_tower and itm.spec.fused_qkv
    assert itm.use_itm_head and itm.reads_prompts and not itm.readout_is_token_mean("legrad")
    assert not itc.reads_prompts and itc.readout_is_token_mean("legrad") and not itc.readout_is_token_mean("model")
    assert itm.num_prefix_tokens == 1 and itm.embedding_dim == PROJECTION_DIM and len(itm.blocks) == NUM_LAYERS
    torch.testing.assert_close(itm.prompt_directions(2), torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 1]]))


def test_the_reference_vision_tower_is_the_models(blip):
    """The reference's hand-written blocks (fused Q/K/V split as [3, heads, head_dim]) give the model's tokens."""
    pixel_values = pixels_of(blip)
    with torch.no_grad():
        outputs, probabilities = vision_states(blip.model, pixel_values)
        theirs = blip.model.vision_model(pixel_values=pixel_values, output_attentions=True)
    torch.testing.assert_close(blip.model.vision_model.post_layernorm(outputs[-1]), theirs.last_hidden_state)
    for ours, model_probabilities in zip(probabilities, theirs.attentions, strict=True):
        torch.testing.assert_close(ours, model_probabilities)


# --- exact maps ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("readout", list(READOUTS))
@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("num_prompts", [1, 3])
def test_raw_maps_equal_the_reference(blip, readout, layer_case, num_prompts):
    layers, indices = LAYER_CASES[layer_case]
    prompts = PROMPTS[:num_prompts]
    pixel_values = pixels_of(blip)
    explainer = LeGradExplainer(blip.model, blip.processor, layers=layers, use_itm_head=READOUTS[readout])
    out = explainer.explain(pixel_values=pixel_values, text=prompts, return_layer_maps=True)
    assert out.explained_layers == indices and out.grid_maps.shape == (2, num_prompts, 6, 6)
    assert_raw_close(out.grid_maps, reference(blip, pixel_values, prompts, indices, readout))
    for position, layer in enumerate(indices):
        assert_raw_close(out.layer_maps[:, :, position], reference(blip, pixel_values, prompts, [layer], readout))


@pytest.mark.parametrize("readout", list(READOUTS))
@pytest.mark.parametrize("height, width", [(48, 32), (40, 64)])
def test_non_square_inputs_interpolate_positions_and_equal_the_reference(blip, readout, height, width):
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    explainer = LeGradExplainer(blip.model, blip.processor, layers="all", use_itm_head=READOUTS[readout])
    out = explainer.explain(pixel_values=pixel_values, text=PROMPTS)
    assert out.grid_maps.shape == (2, 3, height // 8, width // 8) and out.heatmaps.shape[-2:] == (height, width)
    assert_raw_close(out.grid_maps, reference(blip, pixel_values, PROMPTS, list(range(NUM_LAYERS)), readout))


def test_the_models_own_pooling(blip):
    """ITC with `score="model"` pools the CLS token; ITM pools nothing, so both scores give its maps."""
    pixel_values = pixels_of(blip)
    itc = LeGradExplainer(blip.model, blip.processor, layers="all", score="model", use_itm_head=False)
    out = itc.explain(pixel_values=pixel_values, text=PROMPTS)
    assert_raw_close(out.grid_maps, reference(blip, pixel_values, PROMPTS, list(range(NUM_LAYERS)), "itc-cls"))
    maps = [
        LeGradExplainer(blip.model, blip.processor, score=score).explain(pixel_values=pixel_values, text=PROMPTS)
        for score in ("legrad", "model")
    ]
    torch.testing.assert_close(maps[0].grid_maps, maps[1].grid_maps)


def test_itc_prompts_give_the_maps_of_their_text_embeds(blip):
    pixel_values = pixels_of(blip)
    explainer = LeGradExplainer(blip.model, blip.processor, use_itm_head=False)
    from_text = explainer.explain(pixel_values=pixel_values, text=PROMPTS)
    from_embeds = explainer.explain(pixel_values=pixel_values, text_embeds=text_embeds_of(blip, PROMPTS))
    torch.testing.assert_close(from_text.grid_maps, from_embeds.grid_maps, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [1, 2, len(PROMPTS)])
def test_prompt_chunks_give_the_same_maps_and_read_only_their_prompts(blip, monkeypatch, chunk_size):
    """The matching head's readout is built per chunk of prompts on the block's shared tail: every chunk size gives
    the reference's maps, and past the trunk forward the text encoder never runs on more than batch x chunk pairs
    (a readout over all pairs made each chunk's backward go through every prompt: quadratic in the prompts)."""
    monkeypatch.setattr(engine, "PROMPT_CHUNK_SIZE", chunk_size)
    pairs = []
    hook = blip.model.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: pairs.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    pixel_values = pixels_of(blip)
    try:
        out = LeGradExplainer(blip.model, blip.processor, layers="all").explain(pixel_values=pixel_values, text=PROMPTS)
    finally:
        hook.remove()
    assert_raw_close(out.grid_maps, reference(blip, pixel_values, PROMPTS, list(range(NUM_LAYERS)), "itm"))
    chunks = -(-len(PROMPTS) // chunk_size)
    assert pairs[0] == 2 * len(PROMPTS) and len(pairs) == 1 + NUM_LAYERS * chunks  # the trunk, then each chunk
    assert max(pairs[1:]) == 2 * chunk_size


# --- scores ----------------------------------------------------------------------------------------------------
def model_scores(tiny, prompts, pixel_values, use_itm_head: bool) -> torch.Tensor:
    """[images, prompts, ...] from the model's own forward, one (image, prompt) pair per row."""
    encoded = tokenized(tiny, prompts)
    rows = []
    with torch.no_grad():
        for image in pixel_values:
            output = tiny.model(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                pixel_values=image.unsqueeze(0).expand(len(prompts), -1, -1, -1),
                use_itm_head=use_itm_head,
            ).itm_score
            rows.append(output if use_itm_head else output[0])  # ITC: [images, texts], the same row per image
    return torch.stack(rows)


def test_itm_scores_are_the_match_logits_and_probabilities_their_two_way_softmax(blip):
    pixel_values = pixels_of(blip)
    logits = model_scores(blip, PROMPTS, pixel_values, use_itm_head=True)  # [images, prompts, 2]
    out = LeGradExplainer(blip.model, blip.processor).explain(pixel_values=pixel_values, text=PROMPTS)
    torch.testing.assert_close(out.scores, logits[..., 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.probabilities, logits.softmax(dim=-1)[..., 1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.probabilities.sum(dim=-1), torch.ones(2))  # prompts do not compete


def test_itc_scores_are_the_models_cosines_and_probabilities_their_softmax(blip):
    pixel_values = pixels_of(blip)
    cosines = model_scores(blip, PROMPTS, pixel_values, use_itm_head=False)
    out = LeGradExplainer(blip.model, blip.processor, use_itm_head=False).explain(
        pixel_values=pixel_values, text=PROMPTS
    )
    torch.testing.assert_close(out.scores, cosines, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.probabilities, cosines.softmax(dim=-1), rtol=1e-5, atol=1e-6)


# --- precision and side effects --------------------------------------------------------------------------------
@pytest.mark.parametrize("use_itm_head", [True, False])
def test_bfloat16_maps_follow_float32(blip, use_itm_head):
    pixel_values = pixels_of(blip)
    full = LeGradExplainer(blip.model, blip.processor, layers="all", use_itm_head=use_itm_head)
    half_model = BlipForImageTextRetrieval.from_pretrained(blip.path, dtype=torch.bfloat16).eval()
    half = LeGradExplainer(half_model, blip.processor, layers="all", use_itm_head=use_itm_head)
    maps = [explainer.explain(pixel_values=pixel_values, text=PROMPTS).grid_maps for explainer in (full, half)]
    for b in range(2):
        for k in range(len(PROMPTS)):
            stacked = torch.stack([maps[1][b, k].flatten().float(), maps[0][b, k].flatten()])
            assert torch.corrcoef(stacked)[0, 1] >= 0.99


@pytest.mark.parametrize("use_itm_head", [True, False])
def test_the_model_is_left_untouched(blip, use_itm_head):
    model = BlipForImageTextRetrieval.from_pretrained(blip.path)  # a private copy: its flags are changed below
    model.train()
    model.text_encoder.requires_grad_(False)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    explainer = LeGradExplainer(model, blip.processor, layers="all", use_itm_head=use_itm_head)
    explainer.explain(pixel_values=pixels_of(blip), text=PROMPTS[:2])
    assert model.training and all(module.training for module in model.modules())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)


# --- errors ----------------------------------------------------------------------------------------------------
def test_bad_options_and_inputs_raise(blip, clip):
    with pytest.raises(TypeError, match="`use_itm_head` must be True"):
        LeGradExplainer(blip.model, blip.processor, use_itm_head="no")
    with pytest.raises(TypeError, match="takes no option 'use_itm_head'"):
        LeGradExplainer(clip.model, clip.processor, use_itm_head=False)
    with pytest.raises(TypeError, match="BlipRetrievalAdapter takes no option 'use_itm_heads'"):
        LeGradExplainer(blip.model, blip.processor, use_itm_heads=False)
    with pytest.raises(ValueError, match="reads each prompt's tokens.*not `text_embeds`"):
        LeGradExplainer(blip.model).explain(pixel_values=pixels_of(blip), text_embeds=torch.randn(2, PROJECTION_DIM))
    with pytest.raises(ValueError, match="need a processor with a tokenizer"):
        LeGradExplainer(blip.model).explain(pixel_values=pixels_of(blip), text=PROMPTS)
    with pytest.raises(ValueError, match="`text_relevance` explains a dual encoder's prompts"):
        LeGradExplainer(blip.model, blip.processor).explain(
            pixel_values=pixels_of(blip), text=PROMPTS, text_relevance=True
        )
    request = LeGradExplainer(blip.model, blip.processor).prepare_request(pixel_values=pixels_of(blip), text=PROMPTS)
    request.pixels.prompts = None
    with pytest.raises(ValueError, match="matching head reads the prompts' tokens"):
        adapter_for(blip.model).image_features(request.pixels)


# --- pipeline and CLI ------------------------------------------------------------------------------------------
def test_pipeline_loads_the_folder_as_the_retrieval_model(blip):
    pipe = pipeline("legrad-explanation", model=blip.path)
    assert isinstance(pipe, LeGradExplanationPipeline) and type(pipe.model) is BlipForImageTextRetrieval
    image = random_image(0, (80, 50))
    results = pipe(image, candidate_labels=PROMPTS)
    assert sorted(entry["label"] for entry in results) == sorted(PROMPTS)
    out = LeGradExplainer(blip.model, blip.processor).explain(images=image, text=PROMPTS)
    expected = sorted(out.probabilities[0].tolist(), reverse=True)
    assert [entry["score"] for entry in results] == pytest.approx(expected, abs=1e-6)  # match probabilities
    for entry in results:
        assert entry["heatmap"].mode == "L" and entry["heatmap"].size == image.size
        assert entry["overlay"].mode == "RGB" and entry["overlay"].size == image.size


def test_cli_explains_a_folder_with_prompts(blip, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        random_image(index, (64, 48)).save(images / f"scene {index}.png")
    out = tmp_path / "out"
    argv = ["explain", str(images), "--model", blip.path, "--prompt", "a cat", "--prompt", "a red circle"]
    code = main([*argv, "--out", str(out), "--image-size", str(IMAGE_SIZE)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 4 and {record["label"] for record in records} == {"a cat", "a red circle"}


def test_the_cosine_readout_is_an_option_of_the_pipeline_and_the_cli(blip, tmp_path, capsys):
    """`use_itm_head=False` reaches the adapter from `pipeline(...)` and from `--option`; the maps change with it."""
    image = random_image(1, (64, 48))
    cosine = LeGradExplainer(blip.model, blip.processor, use_itm_head=False).explain(images=image, text=PROMPTS)
    matching = LeGradExplainer(blip.model, blip.processor).explain(images=image, text=PROMPTS)
    assert not torch.allclose(cosine.grid_maps, matching.grid_maps)
    pipe = pipeline("legrad-explanation", model=blip.path, use_itm_head=False)
    results = pipe(image, candidate_labels=PROMPTS, return_tensors=True)
    expected = sorted(cosine.probabilities[0].tolist(), reverse=True)
    assert [entry["score"] for entry in results] == pytest.approx(expected, abs=1e-6)  # softmax over the cosines

    path = tmp_path / "scene.png"
    image.save(path)
    argv = ["explain", str(path), "--model", blip.path, "--prompt", PROMPTS[0], "--out", str(tmp_path / "out")]
    assert main([*argv, "--option", "use_itm_head=false"]) == 0, capsys.readouterr().err
    records = json.loads((tmp_path / "out" / "results.json").read_text())
    assert records[0]["score"] == pytest.approx(1.0)  # one prompt: the softmax over the prompts is 1
    assert main([*argv, "--option", "use_itm_head"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main([*argv, "--option", "no_such_option=1"]) != 0
    assert "no_such_option" in capsys.readouterr().err
