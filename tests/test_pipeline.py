"""The `legrad-explanation` pipeline on tiny local folders: loading, call convention, output format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the task)
from transformers_legrad import LeGradExplainer, LeGradExplanationPipeline
from transformers_legrad.geometry import processed_region

from reference import minmax
from tiny_models import make_vit, random_image

LABELS = ["a photo of a cat", "a red circle", "a blue dog"]


def check_results(results, image, labels):
    assert [entry["label"] for entry in results] != [] and sorted(e["label"] for e in results) == sorted(labels)
    scores = [entry["score"] for entry in results]
    assert scores == sorted(scores, reverse=True)
    for entry in results:
        assert set(entry) == {"label", "score", "heatmap", "overlay"}
        assert isinstance(entry["score"], float) and 0.0 <= entry["score"] <= 1.0
        assert entry["heatmap"].mode == "L" and entry["heatmap"].size == image.size
        assert entry["overlay"].mode == "RGB" and entry["overlay"].size == image.size


@pytest.mark.parametrize(
    "family, model_class", [("clip", "CLIPModel"), ("siglip", "SiglipModel"), ("siglip2", "Siglip2Model")]
)
def test_dual_encoder_folder_loads_as_dual_encoder(family, model_class, request):
    tiny = request.getfixturevalue(family)
    pipe = pipeline("legrad-explanation", model=tiny.path)
    assert isinstance(pipe, LeGradExplanationPipeline)
    assert type(pipe.model).__name__ == model_class
    image = random_image(0, (80, 50))
    results = pipe(image, candidate_labels=LABELS)
    check_results(results, image, LABELS)


def test_classifier_top_k_and_targets(vit):
    pipe = pipeline("legrad-explanation", model=vit.path)
    image = random_image(1, (64, 64))
    top3 = pipe(image, top_k=3)
    check_results(top3, image, [entry["label"] for entry in top3])
    assert len(top3) == 3
    with torch.no_grad():
        pixel_values = vit.processor(images=image, return_tensors="pt")["pixel_values"]
        probabilities = vit.model(pixel_values=pixel_values).logits.softmax(-1)[0]
    expected = probabilities.topk(3)
    assert [entry["label"] for entry in top3] == [vit.model.config.id2label[int(i)] for i in expected.indices]
    np.testing.assert_allclose([entry["score"] for entry in top3], expected.values.numpy(), rtol=1e-5)
    chosen = pipe(image, targets=["frog", "cat"])
    check_results(chosen, image, ["frog", "cat"])


def test_maps_equal_the_explainers_mapped_back_to_the_original_image(clip):
    """CLIP resizes the short side and center-crops: the map covers the crop, and is 0 where it was cut away."""
    pipe = pipeline("legrad-explanation", model=clip.path)
    image = random_image(2, (96, 48))
    results = pipe(image, candidate_labels=LABELS[:1], return_tensors=True)
    full = results[0]["map"]
    assert full.dtype == torch.float32 and full.shape == (48, 96)
    region = processed_region(clip.processor.image_processor, 96, 48)
    assert region == (24.0, 0.0, 72.0, 48.0)
    assert full[:, :24].eq(0).all() and full[:, 72:].eq(0).all()
    out = LeGradExplainer(clip.model, clip.processor).explain(images=image, text=LABELS[:1])
    torch.testing.assert_close(full[:, 24:72], out.heatmaps[0, 0], rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.asarray(results[0]["heatmap"]), np.round(full.numpy() * 255).astype(np.uint8))


def test_lists_batches_paths_and_arrays(clip, tmp_path):
    pipe = pipeline("legrad-explanation", model=clip.path, batch_size=2)
    path = tmp_path / "picture.png"
    random_image(3, (60, 60)).save(path)
    array = np.asarray(random_image(4, (50, 70)))
    inputs = [random_image(5), str(path), array]
    results = pipe(inputs, candidate_labels=LABELS)
    assert len(results) == 3 and all(len(r) == 3 for r in results)
    assert results[2][0]["heatmap"].size == (50, 70)
    one_by_one = [pipe(item, candidate_labels=LABELS, batch_size=1) for item in inputs]
    for batched, single in zip(results, one_by_one, strict=True):
        for a, b in zip(batched, single, strict=True):
            assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5
            assert np.abs(np.asarray(a["heatmap"], int) - np.asarray(b["heatmap"], int)).max() <= 1


def test_options_reach_the_explainer(clip, siglip):
    pipe = pipeline("legrad-explanation", model=clip.path)
    image = random_image(6)
    default = pipe(image, candidate_labels=LABELS[:1], return_tensors=True)[0]["map"]
    all_layers = pipe(image, candidate_labels=LABELS[:1], layers="all", return_tensors=True)[0]["map"]
    assert not torch.allclose(default, all_layers)
    sized = pipe(image, candidate_labels=LABELS[:1], image_size=64, return_tensors=True)[0]["map"]
    assert sized.shape == (48, 48) and not torch.allclose(default, sized)
    sig = pipeline("legrad-explanation", model=siglip.path)
    corrected = sig(image, candidate_labels=LABELS[:1], return_tensors=True)[0]["map"]
    plain = sig(image, candidate_labels=LABELS[:1], correction=False, return_tensors=True)[0]["map"]
    assert not torch.allclose(corrected, plain)


def test_model_object_with_its_processor_parts(clip):
    pipe = pipeline(
        "legrad-explanation",
        model=clip.model,
        tokenizer=clip.processor.tokenizer,
        image_processor=clip.processor.image_processor,
    )
    results = pipe(random_image(7), candidate_labels=LABELS[:2])
    assert len(results) == 2


def test_dtype_argument(vit):
    pipe = pipeline("legrad-explanation", model=vit.path, dtype=torch.bfloat16)
    assert next(pipe.model.parameters()).dtype == torch.bfloat16
    full = pipeline("legrad-explanation", model=vit.path)
    image = random_image(8)
    half_map = pipe(image, targets=[2], return_tensors=True)[0]["map"]
    full_map = full(image, targets=[2], return_tensors=True)[0]["map"]
    correlation = np.corrcoef(half_map.flatten().numpy(), full_map.flatten().numpy())[0, 1]
    assert correlation >= 0.99


@pytest.mark.parametrize("problem_type, num_labels", [("multi_label_classification", 5), (None, 1), ("regression", 5)])
def test_classifier_scores_follow_the_image_classification_pipeline(problem_type, num_labels):
    """transformers' `function_to_apply` rule: sigmoid for multi-label (and one label), the logits for regression."""
    tiny = make_vit()
    config = tiny.model.config
    config.problem_type, config.num_labels = problem_type, num_labels
    if num_labels == 1:
        tiny.model.classifier = torch.nn.Linear(config.hidden_size, 1)
    image = random_image(4)
    ours = pipeline("legrad-explanation", model=tiny.model, image_processor=tiny.processor)(image, top_k=1)
    theirs = pipeline("image-classification", model=tiny.model, image_processor=tiny.processor)(image, top_k=1)
    assert [(r["label"], round(r["score"], 5)) for r in ours] == [(r["label"], round(r["score"], 5)) for r in theirs]


def test_pipeline_errors(clip, vit):
    pipe = pipeline("legrad-explanation", model=clip.path)
    with pytest.raises(ValueError, match="candidate_labels"):
        pipe(random_image(0))
    with pytest.raises(ValueError, match="empty list"):
        pipe(random_image(0), candidate_labels=[])
    with pytest.raises(TypeError, match="unknown argument"):
        pipe(random_image(0), candidate_labels=["a"], colour="red")
    classifier = pipeline("legrad-explanation", model=vit.path)
    with pytest.raises(ValueError, match="top_k"):
        classifier(random_image(0), candidate_labels=["a"])
    with pytest.raises(ValueError, match="unknown target label"):
        classifier(random_image(0), targets=["zebra"])


def test_map_values_track_the_explainer_heatmap_ordering(siglip):
    """The pipeline's map is the explainer's heatmap, up to the resize onto the original image."""
    pipe = pipeline("legrad-explanation", model=siglip.path)
    image = random_image(9, (48, 48))
    result = pipe(image, candidate_labels=LABELS[:1], return_tensors=True)[0]["map"]
    out = LeGradExplainer(siglip.model, siglip.processor).explain(images=image, text=LABELS[:1])
    torch.testing.assert_close(minmax(result[None, None]), out.heatmaps, rtol=1e-5, atol=1e-6)
    assert isinstance(result, torch.Tensor) and Image.fromarray(np.uint8(result.numpy() * 255)).size == (48, 48)


def test_siglip2_image_size_through_the_pipeline(siglip2):
    pipe = pipeline("legrad-explanation", model=siglip2.path)
    image = random_image(10, (80, 40))
    result = pipe(image, candidate_labels=LABELS[:1], image_size=32, return_tensors=True)[0]
    assert result["map"].shape == (40, 80) and result["heatmap"].size == (80, 40)
    assert 0.9 < result["map"].max() <= 1.0 and 0.0 <= result["map"].min() < 0.1


def test_device_map_auto(clip):
    pipe = pipeline("legrad-explanation", model=clip.path, device_map="auto")
    reference = pipeline("legrad-explanation", model=clip.path)
    image = random_image(11)
    mapped = pipe(image, candidate_labels=LABELS[:2], return_tensors=True)
    plain = reference(image, candidate_labels=LABELS[:2], return_tensors=True)
    for a, b in zip(mapped, plain, strict=True):
        assert a["label"] == b["label"]
        torch.testing.assert_close(a["map"], b["map"])
