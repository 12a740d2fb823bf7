"""Bad input gets a clear error naming the problem and the fix, raised before any forward pass."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import BertConfig, BertModel, ViTMAEConfig, ViTMAEModel

from transformers_legrad import SUPPORTED_MODEL_CLASSES, LeGradExplainer
from transformers_legrad.adapters import adapter_for

from tiny_models import random_image


@contextlib.contextmanager
def no_forward_runs(model):
    """Fail if any block of the model runs: validation must happen before heavy work."""
    calls = []
    handles = [block.register_forward_pre_hook(lambda *a: calls.append(1)) for block in adapter_for(model).blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    assert not calls, "the model ran before the error was raised"


def pixels(batch=1, channels=3, size=48):
    return torch.randn(batch, channels, size, size)


def test_unsupported_model_lists_supported_classes():
    vit = ViTMAEModel(ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    for model in (vit, bert, torch.nn.Linear(2, 2)):
        with pytest.raises(TypeError, match="does not support") as error:
            LeGradExplainer(model)
        for name in SUPPORTED_MODEL_CLASSES:
            assert name in str(error.value)
    assert set(SUPPORTED_MODEL_CLASSES) >= {
        "CLIPModel",
        "CLIPVisionModelWithProjection",
        "MetaClip2Model",
        "MetaClip2VisionModelWithProjection",
        "AltCLIPModel",
        "ChineseCLIPModel",
        "SiglipModel",
        "Siglip2Model",
        "ViTForImageClassification",
        "DeiTForImageClassification",
        "DeiTForImageClassificationWithTeacher",
        "Dinov2ForImageClassification",
        "ViTMSNForImageClassification",
        "Dinov2WithRegistersForImageClassification",
        "BeitForImageClassification",
        "Data2VecVisionForImageClassification",
        "CLIPVisionModel",
        "SiglipVisionModel",
        "ViTModel",
        "Dinov2Model",
        "Dinov2WithRegistersModel",
        "DINOv3ViTModel",
    }


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"text": []}, ValueError, "empty list"),
        ({"text": ["a cat", 3]}, TypeError, "must hold strings"),
        ({"text_embeds": torch.randn(2, 7)}, ValueError, r"\[prompts, 16\]"),
        ({"text_embeds": torch.zeros(2, 16)}, ValueError, "zero norm"),
        ({"text_embeds": torch.full((1, 16), float("nan"))}, ValueError, "NaN"),
        ({"text_embeds": torch.randn(0, 16)}, ValueError, "no prompt"),
        ({"text": ["a"], "text_embeds": torch.randn(1, 16)}, ValueError, "not both"),
        ({}, ValueError, "explains text prompts"),
        ({"text_embeds": torch.randn(1, 16), "targets": [1]}, ValueError, "targets"),
        ({"text_embeds": torch.randn(1, 16), "correction": True}, ValueError, "correction"),
        ({"text_embeds": torch.randn(1, 16), "layers": 9}, ValueError, "the model has 4"),
        ({"text_embeds": torch.randn(1, 16), "layers": []}, ValueError, "empty"),
        ({"text_embeds": torch.randn(1, 16), "layers": [0, 4]}, ValueError, r"blocks 0\.\.3"),
        ({"text_embeds": torch.randn(1, 16), "layers": "last"}, ValueError, "'all'"),
        ({"text_embeds": torch.randn(1, 16), "layers": True}, TypeError, "bool"),
        ({"text_embeds": torch.randn(1, 16), "image_size": 64}, ValueError, "image_size"),
    ],
)
def test_clip_prompt_and_option_errors(clip, kwargs, error, message):
    with no_forward_runs(clip.model), pytest.raises(error, match=message):
        LeGradExplainer(clip.model, clip.processor).explain(pixel_values=pixels(), **kwargs)


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(3, 48, 48), r"\[batch, 3, height, width\]"),
        (torch.randn(1, 1, 48, 48), "1 channels but the model expects 3"),
        (torch.randn(1, 3, 4, 48), "smaller than one 8x8 patch"),
        (torch.randn(0, 3, 48, 48), "batch size 0"),
        ([[1.0]], r"\[batch, 3, height, width\]"),
    ],
)
def test_wrong_image_tensors(clip, pixel_values, message):
    with no_forward_runs(clip.model), pytest.raises(ValueError, match=message):
        LeGradExplainer(clip.model).explain(pixel_values=pixel_values, text_embeds=torch.randn(1, 16))


def test_raw_inputs_without_a_processor(clip):
    explainer = LeGradExplainer(clip.model)
    with no_forward_runs(clip.model):
        with pytest.raises(ValueError, match="Raw images need the model's processor"):
            explainer.explain(images=random_image(0), text_embeds=torch.randn(1, 16))
        with pytest.raises(ValueError, match="Text prompts need a processor"):
            explainer.explain(pixel_values=pixels(), text=["a cat"])
        with pytest.raises(ValueError, match="either `images` or `pixel_values`"):
            explainer.explain(images=random_image(0), pixel_values=pixels(), text_embeds=torch.randn(1, 16))
        with pytest.raises(ValueError, match="Nothing to explain"):
            explainer.explain(text_embeds=torch.randn(1, 16))
        with pytest.raises(TypeError, match="pixel_values="):
            LeGradExplainer(clip.model, clip.processor).explain(images=pixels(), text=["a cat"])
        with pytest.raises(ValueError, match="empty list"):
            LeGradExplainer(clip.model, clip.processor).explain(images=[], text=["a cat"])


def test_text_for_a_model_without_text_tower(clip_vision_projection):
    explainer = LeGradExplainer(clip_vision_projection.model, clip_vision_projection.processor)
    with pytest.raises(TypeError, match="has no text tower"):
        explainer.explain(pixel_values=pixels(), text=["a cat"])


def test_siglip_correction_without_null_prompt_source(siglip):
    with no_forward_runs(siglip.model), pytest.raises(ValueError, match="null_text_embeds"):
        LeGradExplainer(siglip.model).explain(pixel_values=pixels(), text_embeds=torch.randn(1, 32))
    with pytest.raises(ValueError, match=r"\[1, dim\]"):
        LeGradExplainer(siglip.model).explain(
            pixel_values=pixels(), text_embeds=torch.randn(1, 32), null_text_embeds=torch.randn(2, 32)
        )


def test_siglip2_needs_its_naflex_inputs(siglip2):
    with no_forward_runs(siglip2.model), pytest.raises(ValueError, match="pre-patchified"):
        LeGradExplainer(siglip2.model).explain(pixel_values=pixels(), text_embeds=torch.randn(1, 32), correction=False)


@pytest.mark.parametrize(
    "targets, error, message",
    [
        (["zebra"], ValueError, "unknown target label 'zebra'"),
        ([5], ValueError, "out of range: the model has 5 classes"),
        ([-1], ValueError, "out of range"),
        (["7"], ValueError, "out of range: the model has 5 classes"),
        ([], ValueError, "empty"),
        ([1.5], TypeError, "class ids or label names"),
        (torch.tensor([0.5]), ValueError, "integer class ids"),
    ],
)
def test_classifier_target_errors(vit, targets, error, message):
    with no_forward_runs(vit.model), pytest.raises(error, match=message):
        LeGradExplainer(vit.model).explain(pixel_values=pixels(), targets=targets)


def test_text_for_a_classifier(vit):
    with no_forward_runs(vit.model), pytest.raises(ValueError, match="image classifier"):
        LeGradExplainer(vit.model, vit.processor).explain(pixel_values=pixels(), text=["a cat"])


def test_per_image_targets_must_match_the_batch(vit):
    with pytest.raises(ValueError, match="2 rows but there are 3 images"):
        LeGradExplainer(vit.model).explain(pixel_values=pixels(batch=3), targets=torch.tensor([[0], [1]]))


def test_inference_mode_is_refused(clip):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        LeGradExplainer(clip.model).explain(pixel_values=pixels(), text_embeds=torch.randn(1, 16))


def test_bad_constructor_arguments(clip):
    with pytest.raises(ValueError, match="score"):
        LeGradExplainer(clip.model, score="cls")
    with pytest.raises(ValueError, match="the model has 4"):
        LeGradExplainer(clip.model, layers=0)
