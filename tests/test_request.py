"""The public request seam (`prepare_request`, `ExplanationRequest`), `LeGradOutput.labels_for`, `__version__`."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import transformers_legrad
from transformers_legrad import ExplanationRequest, LeGradExplainer, LeGradOutput
from transformers_legrad.evaluation.baselines import GradCAMExplainer, RawAttentionExplainer, RolloutExplainer

from test_errors import no_forward_runs, pixels
from test_inputs import text_embeddings
from tiny_models import LABELS, random_image

PROMPTS = ["a photo of a red circle", "a photo of a cat"]


# --- the seam is public ------------------------------------------------------------------------------------------
def test_the_request_seam_is_public_and_documented():
    assert "ExplanationRequest" in transformers_legrad.__all__
    for documented in (LeGradExplainer.prepare_request, ExplanationRequest, ExplanationRequest.directions_for):
        doc = inspect.getdoc(documented)
        assert doc and ("Args:" in doc or "Attributes:" in doc) and ("Returns:" in doc or "Attributes:" in doc)
    explain = set(inspect.signature(LeGradExplainer.explain).parameters)
    prepare = set(inspect.signature(LeGradExplainer.prepare_request).parameters)
    shared = {"images", "text", "pixel_values", "text_embeds", "targets", "top_k", "image_size"}
    assert shared | {"pixel_attention_mask", "spatial_shapes"} <= explain & prepare


def test_baselines_call_no_private_method_of_the_explainer():
    import transformers_legrad.evaluation.baselines as baselines

    source = inspect.getsource(baselines)
    private = [name for name, _ in inspect.getmembers(LeGradExplainer) if name.startswith("_") and name[1] != "_"]
    assert private, "the explainer has private helpers to look for"
    for name in private:
        assert f".{name}(" not in source and f".{name}\n" not in source, name


# --- what prepare_request returns --------------------------------------------------------------------------------
def test_dual_encoder_request_has_validated_pixels_and_the_prompts_directions(clip):
    explainer = LeGradExplainer(clip.model, clip.processor)
    images = [random_image(0), random_image(1)]
    with no_forward_runs(clip.model):
        request = explainer.prepare_request(images=images, text=PROMPTS)
    processed = clip.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert request.is_dual_encoder and request.batch_size == 2
    torch.testing.assert_close(request.pixels.model_kwargs["pixel_values"], processed)
    assert request.pixels.grid_shapes == [(6, 6)] * 2 and request.pixels.image_sizes == [(48, 48)] * 2
    expected = F.normalize(text_embeddings(clip, PROMPTS, padding=True), dim=-1)
    torch.testing.assert_close(request.directions, expected, rtol=1e-5, atol=1e-6)
    assert request.labels == PROMPTS and request.targets is None and request.null_direction is None

    features = torch.randn(2, expected.shape[1])
    directions, labels, target_ids = request.directions_for(features)
    assert directions.shape == (2, 2, expected.shape[1]) and labels == PROMPTS and target_ids is None
    torch.testing.assert_close(directions[1], expected, rtol=1e-5, atol=1e-6)


def test_text_embeds_are_normalized_and_named(clip):
    embeds = torch.tensor([[3.0] + [0.0] * 15, [0.0, 4.0] + [0.0] * 14])
    request = LeGradExplainer(clip.model).prepare_request(pixel_values=pixels(), text_embeds=embeds)
    torch.testing.assert_close(request.directions, F.normalize(embeds, dim=-1))
    assert request.labels == ["prompt 0", "prompt 1"]


def test_classifier_request_resolves_targets_per_image(vit):
    explainer = LeGradExplainer(vit.model)
    request = explainer.prepare_request(pixel_values=pixels(batch=2), targets=["dog", 3, "4"])
    assert not request.is_dual_encoder and request.directions is None and request.labels is None
    assert request.targets.tolist() == [1, 3, 4] and request.top_k == 1
    directions, labels, target_ids = request.directions_for(torch.randn(2, len(LABELS)))
    assert target_ids.tolist() == [[1, 3, 4]] * 2 and labels == ["dog", "fish", "frog"]
    torch.testing.assert_close(directions, F.one_hot(target_ids, len(LABELS)).float())

    top2 = explainer.prepare_request(pixel_values=pixels(batch=2), top_k=2)
    logits = torch.tensor([[0.0, 5.0, 1.0, 9.0, 2.0], [7.0, 0.0, 8.0, 1.0, 2.0]])
    directions, labels, target_ids = top2.directions_for(logits)
    assert target_ids.tolist() == [[3, 1], [2, 0]] and labels == [["fish", "dog"], ["bird", "cat"]]
    assert directions.shape == (2, 2, len(LABELS)) and directions[1, 0, 2] == 1

    per_image = explainer.prepare_request(pixel_values=pixels(batch=2), targets=torch.tensor([[0], [2]]))
    assert per_image.directions_for(logits)[1] == [["cat"], ["bird"]]
    with pytest.raises(ValueError, match=r"must be \[2, features\]"):
        per_image.directions_for(torch.randn(3, len(LABELS)))


def test_null_prompt_is_an_option_for_legrads_correction_only(siglip, vit):
    null = torch.randn(1, 32)
    request = LeGradExplainer(siglip.model).prepare_request(
        pixel_values=pixels(), text_embeds=torch.randn(2, 32), null_prompt=True, null_text_embeds=null
    )
    torch.testing.assert_close(request.null_direction, F.normalize(null, dim=-1))
    assert request.directions_for(torch.randn(1, 32))[0].shape == (1, 2, 32)  # the null prompt is not a prompt
    with pytest.raises(ValueError, match="null_prompt=True"):
        LeGradExplainer(siglip.model).prepare_request(
            pixel_values=pixels(), text_embeds=torch.randn(2, 32), null_text_embeds=null
        )
    with pytest.raises(ValueError, match="explains classes"):
        LeGradExplainer(vit.model).prepare_request(pixel_values=pixels(), null_prompt=True)


# --- one seam, one error -----------------------------------------------------------------------------------------
def _error(call) -> tuple[type, str]:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is what is compared
        call()
    return type(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "family, kwargs",
    [
        ("clip", {"pixel_values": pixels()}),
        ("clip", {"pixel_values": pixels(), "text": []}),
        ("clip", {"pixel_values": pixels(), "text": ["a", 3]}),
        ("clip", {"pixel_values": pixels(), "text_embeds": torch.randn(2, 7)}),
        ("clip", {"pixel_values": pixels(), "text": ["a"], "targets": [1]}),
        ("clip", {"pixel_values": torch.randn(3, 48, 48), "text": ["a"]}),
        ("clip", {"images": random_image(0), "pixel_values": pixels(), "text": ["a"]}),
        ("clip", {"pixel_values": pixels(), "text": ["a"], "image_size": 64}),
        ("clip", {"pixel_values": torch.randn(3, 48, 48), "text": []}),  # two errors: the prompts are checked first
        ("vit", {"pixel_values": pixels(), "text": ["a cat"]}),
        ("vit", {"pixel_values": pixels(), "targets": ["zebra"]}),
        ("vit", {"pixel_values": pixels(), "targets": [1], "top_k": 2}),
        ("vit", {"pixel_values": pixels(), "top_k": 0}),
        ("vit", {"pixel_values": pixels(batch=3), "targets": torch.tensor([[0], [1]])}),
        ("vit", {"pixel_values": torch.randn(1, 1, 48, 48), "targets": ["zebra"]}),
    ],
)
def test_a_baseline_and_legrad_raise_the_same_error(request, family, kwargs):
    tiny = request.getfixturevalue(family)
    legrad = LeGradExplainer(tiny.model, tiny.processor)
    with no_forward_runs(tiny.model):
        expected = _error(lambda: legrad.explain(**kwargs))
        assert _error(lambda: legrad.prepare_request(**kwargs)) == expected
    for baseline in (RawAttentionExplainer, RolloutExplainer, GradCAMExplainer):
        explainer = baseline(tiny.model, tiny.processor)
        with no_forward_runs(explainer.eager_model):
            assert _error(lambda explainer=explainer: explainer.explain(**kwargs)) == expected, baseline.method


# --- LeGradOutput.labels_for -------------------------------------------------------------------------------------
def _output(batch: int, labels) -> LeGradOutput:
    prompts = len(labels) if isinstance(labels[0], str) else len(labels[0])
    return LeGradOutput(
        heatmaps=torch.zeros(batch, prompts, 4, 4),
        grid_maps=torch.zeros(batch, prompts, 2, 2),
        layer_maps=None,
        labels=labels,
        scores=torch.zeros(batch, prompts),
        explained_layers=[0],
        grid_shapes=[(2, 2)] * batch,
        image_sizes=[(4, 4)] * batch,
    )


def test_labels_for_shared_and_per_image_labels():
    shared = _output(3, ["a cat", "a dog"])
    assert [shared.labels_for(b) for b in range(3)] == [["a cat", "a dog"]] * 3
    assert shared.labels_for(-1) == ["a cat", "a dog"] and shared.num_prompts == 2
    per_image = _output(2, [["cat", "dog"], ["bird", "fish"]])
    assert per_image.labels_for(0) == ["cat", "dog"] and per_image.labels_for(1) == ["bird", "fish"]
    assert per_image.labels_for(-2) == ["cat", "dog"] and per_image.num_prompts == 2
    per_image.labels_for(0).append("frog")  # a copy: the output is not changed through it
    assert per_image.labels_for(0) == ["cat", "dog"]


@pytest.mark.parametrize("index", [2, -3, 10])
def test_labels_for_an_image_out_of_range(index):
    for output in (_output(2, ["a cat"]), _output(2, [["cat"], ["dog"]])):
        with pytest.raises(IndexError, match=rf"image {index} is out of range: this output holds 2 image\(s\)"):
            output.labels_for(index)
    with pytest.raises(TypeError, match="not a bool"):
        _output(2, ["a cat"]).labels_for(True)


def test_labels_for_on_explanations(clip, vit):
    out = LeGradExplainer(clip.model, clip.processor).explain(images=[random_image(0), random_image(1)], text=PROMPTS)
    assert out.labels_for(1) == PROMPTS and out.num_prompts == 2
    out = RolloutExplainer(vit.model).explain(pixel_values=pixels(batch=2), targets=torch.tensor([[0], [2]]))
    assert out.labels_for(0) == ["cat"] and out.labels_for(1) == ["bird"] and out.num_prompts == 1


# --- __version__ -------------------------------------------------------------------------------------------------
def test_version_is_the_installed_distributions():
    assert transformers_legrad.__version__ == importlib.metadata.version("transformers-legrad")


def test_version_without_package_metadata():
    script = (
        "import importlib.metadata as metadata\n"
        "installed = metadata.version\n"
        "def version(name):\n"
        "    if name == 'transformers-legrad':\n"
        "        raise metadata.PackageNotFoundError(name)\n"
        "    return installed(name)\n"
        "metadata.version = version\n"
        "import transformers_legrad\n"
        "print(transformers_legrad.__version__)\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0+unknown"
