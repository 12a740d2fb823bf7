"""OWL-ViT and OWLv2 detections: exact maps against an independent reference, which boxes are explained (highest,
`boxes=`, `threshold=` with padding), the model's own scores and boxes, bf16, and errors."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import pipeline

from transformers_legrad import LeGradExplainer, geometry, visualize
from transformers_legrad.cli import main
from transformers_legrad.detection import PADDING

from reference_owl import reference_detection_maps
from test_exact import assert_raw_maps_match
from tiny_models import PATCH_SIZE, random_image
from tiny_owl import NUM_LAYERS, OWLV2_IMAGE_SIZE, bright_scene, make_bright_object_detector, make_owlv2, make_owlvit

FAMILIES = {"owlvit": (make_owlvit, (60, 40)), "owlv2": (make_owlv2, (OWLV2_IMAGE_SIZE, 40))}
QUERIES = ["a red circle", "a cat", "a blue square"]
LAYERS = {"last-2": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]), "all": ("all", list(range(NUM_LAYERS)))}


@functools.cache
def tiny(name: str):
    return FAMILIES[name][0]()


def pictures(name: str, count: int = 2):
    return [random_image(seed, FAMILIES[name][1]) for seed in range(count)]


def model_outputs(name: str, images, queries):
    """The model's own forward (logits [B, patches, queries], pred_boxes) and pixel values through its processor."""
    t = tiny(name)
    inputs = t.processor(text=[list(queries)] * len(images), images=images, return_tensors="pt")
    with torch.no_grad():
        outputs = t.model(**inputs)
    return outputs, inputs["pixel_values"]


def reference(name: str, out, pixel_values, queries, layers):
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor)
    embeds = explainer._encode_text(list(queries))
    return reference_detection_maps(tiny(name).model, pixel_values, embeds, out.box_indices, out.target_ids, layers)


# --- exact maps ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", list(LAYERS))
@pytest.mark.parametrize("name", list(FAMILIES))
def test_highest_boxes_maps_equal_the_reference(name, layers):
    spec, indices = LAYERS[layers]
    images = pictures(name)
    out = LeGradExplainer(tiny(name).model, tiny(name).processor, layers=spec).explain(
        images=images, text=QUERIES, return_layer_maps=True
    )
    outputs, pixel_values = model_outputs(name, images, QUERIES)
    assert out.explained_layers == indices
    assert out.labels == QUERIES and out.heatmaps.shape[:2] == (2, len(QUERIES))
    torch.testing.assert_close(out.box_indices, outputs.logits.argmax(dim=1))
    torch.testing.assert_close(out.target_ids, torch.arange(len(QUERIES)).expand(2, -1))
    ref = reference(name, out, pixel_values, QUERIES, indices)
    assert_raw_maps_match(out.layer_maps, ref)
    assert_raw_maps_match(out.grid_maps, ref.sum(dim=2))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_scores_and_boxes_are_the_models_own(name):
    images = pictures(name)
    out = LeGradExplainer(tiny(name).model, tiny(name).processor).explain(images=images, text=QUERIES)
    outputs, pixel_values = model_outputs(name, images, QUERIES)
    logits = outputs.logits.gather(1, out.box_indices.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(out.scores, logits)
    torch.testing.assert_close(out.probabilities, logits.sigmoid())
    height, width = pixel_values.shape[-2:]
    chosen = outputs.pred_boxes.gather(1, out.box_indices.unsqueeze(-1).expand(-1, -1, 4))
    corners = torch.cat([chosen[..., :2] - chosen[..., 2:] / 2, chosen[..., :2] + chosen[..., 2:] / 2], dim=-1)
    torch.testing.assert_close(out.boxes, corners * torch.tensor([width, height, width, height]))
    assert out.boxes.dtype == torch.float32 and out.boxes.shape == (2, len(QUERIES), 4)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_given_boxes_shared_and_per_image(name):
    images = pictures(name)
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor, layers="all")
    shared = explainer.explain(images=images, text=QUERIES[:2], boxes=[3, 17], return_layer_maps=True)
    assert shared.box_indices.tolist() == [[3, 17], [3, 17]]
    per_image = explainer.explain(images=images, text=QUERIES[:2], boxes=torch.tensor([[3, 17], [5, 0]]))
    assert per_image.box_indices.tolist() == [[3, 17], [5, 0]]
    _, pixel_values = model_outputs(name, images, QUERIES[:2])
    for out in (shared, per_image):
        ref = reference(name, out, pixel_values, QUERIES[:2], list(range(NUM_LAYERS)))
        assert_raw_maps_match(out.grid_maps, ref.sum(dim=2))
    torch.testing.assert_close(per_image.grid_maps[0], shared.grid_maps[0])  # same pairs in image 0
    assert not torch.allclose(per_image.grid_maps[1], shared.grid_maps[1])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_threshold_explains_every_pair_above_it_padding_the_rest(name):
    images = pictures(name)
    outputs, pixel_values = model_outputs(name, images, QUERIES[:2])
    probabilities = outputs.logits.sigmoid()
    # A threshold between two of image 0's scores at which image 0 and image 1 keep different numbers of pairs.
    values = probabilities[0].flatten().unique().sort(descending=True).values
    for threshold in ((values[:-1] + values[1:]) / 2).tolist():
        counts = [(p > threshold).sum().item() for p in probabilities]
        if min(counts) >= 1 and counts[0] != counts[1]:
            break
    assert min(counts) >= 1 and counts[0] != counts[1], counts
    out = LeGradExplainer(tiny(name).model, tiny(name).processor).explain(
        images=images, text=QUERIES[:2], threshold=threshold
    )
    assert out.heatmaps.shape[1] == max(counts)
    for b in range(2):
        kept = out.box_indices[b] != PADDING
        assert kept.sum().item() == counts[b]
        expected = {(int(j), int(q)) for j, q in torch.nonzero(probabilities[b] > threshold)}
        got = {(int(j), int(q)) for j, q in zip(out.box_indices[b][kept], out.target_ids[b][kept], strict=True)}
        assert got == expected
        assert out.probabilities[b][kept].diff().le(0).all(), "pairs come highest score first"
        assert (out.probabilities[b][kept] > threshold).all()
        labels = out.labels_for(b)
        assert [labels[m] for m in range(counts[b])] == [QUERIES[q] for q in out.target_ids[b][kept].tolist()]
        padding = ~kept
        assert (out.target_ids[b][padding] == PADDING).all() and all(
            labels[m] == "" for m in range(counts[b], len(labels))
        )
        assert out.grid_maps[b][padding].eq(0).all() and out.heatmaps[b][padding].eq(0).all()
        assert out.boxes[b][padding].eq(0).all() and out.probabilities[b][padding].eq(0).all()
        assert out.scores[b][padding].eq(0).all()
    ref = reference(name, out, pixel_values, QUERIES[:2], out.explained_layers)
    assert_raw_maps_match(out.grid_maps, ref.sum(dim=2))


def test_a_threshold_above_every_score_gives_one_padding_map():
    images = pictures("owlv2", 1)
    outputs, _ = model_outputs("owlv2", images, QUERIES)
    threshold = float(outputs.logits.sigmoid().max()) + 1e-4  # no pair is above the best one
    assert threshold < 1
    out = LeGradExplainer(tiny("owlv2").model, tiny("owlv2").processor).explain(
        images=images, text=QUERIES, threshold=threshold
    )
    assert out.box_indices.tolist() == [[PADDING]] and out.labels == [""]
    assert out.grid_maps.eq(0).all()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bfloat16_maps_follow_float32(name):
    images = pictures(name)
    reference_out = LeGradExplainer(tiny(name).model, tiny(name).processor).explain(images=images, text=QUERIES)
    half = LeGradExplainer(copy.deepcopy(tiny(name).model).to(torch.bfloat16), tiny(name).processor)
    out = half.explain(images=images, text=QUERIES, boxes=reference_out.box_indices)
    assert torch.isfinite(out.grid_maps).all()
    ours, ref = out.grid_maps.flatten(2), reference_out.grid_maps.flatten(2)
    correlation = F.cosine_similarity(ours - ours.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True), dim=-1)
    assert correlation.min() >= 0.99, correlation


# --- a detector made to find the bright square: the explained box's map peaks inside the box ------------------
@pytest.mark.parametrize("cells", [(2, 2), (3, 0), (0, 4)])
def test_the_map_of_the_detected_box_peaks_inside_it(cells):
    detector = make_bright_object_detector()
    scene = bright_scene(cells)
    out = LeGradExplainer(detector.model, detector.processor).explain(images=scene, text=["a white square"])
    xmin, ymin, xmax, ymax = out.boxes[0, 0].tolist()
    top, left = cells[0] * PATCH_SIZE, cells[1] * PATCH_SIZE
    bottom, right = top + 2 * PATCH_SIZE, left + 2 * PATCH_SIZE
    assert out.probabilities[0, 0] > 0.5, "the constructed model detects the square"
    assert xmin <= left and ymin <= top and xmax >= right and ymax >= bottom, "the box covers the square"
    heatmap = out.heatmaps[0, 0]
    y, x = divmod(int(heatmap.argmax()), heatmap.shape[1])
    assert xmin <= x <= xmax and ymin <= y <= ymax, (x, y, out.boxes[0, 0])
    assert top <= y < bottom and left <= x < right, "the map peaks on the square itself"
    outside = torch.ones_like(heatmap, dtype=torch.bool)
    outside[max(0, top - PATCH_SIZE) : bottom + PATCH_SIZE, max(0, left - PATCH_SIZE) : right + PATCH_SIZE] = False
    assert heatmap[outside].max() < 0.05, "the rest of the scene is not relevant"


# --- pipeline and CLI -----------------------------------------------------------------------------------------
def assert_same_detections(ours, theirs):
    """Our pipeline's results are `zero-shot-object-detection`'s (boxes within one pixel: float rounding before
    `int()`), plus a heatmap and an overlay of the original image's size."""
    assert len(ours) == len(theirs) > 0
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine["label"] == reference["label"]
        assert mine["score"] == pytest.approx(reference["score"], abs=1e-5)
        assert mine["box"].keys() == reference["box"].keys() == {"xmin", "ymin", "xmax", "ymax"}
        for key, value in reference["box"].items():
            assert abs(mine["box"][key] - value) <= 1, (mine["box"], reference["box"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_pipeline_returns_zero_shot_object_detection_results_with_maps(name):
    image = pictures(name, 1)[0]
    labels = ["a cat", "a red circle"]
    ours = pipeline("legrad-explanation", model=tiny(name).path)
    theirs = pipeline("zero-shot-object-detection", model=tiny(name).path)
    for kwargs in ({}, {"threshold": 0.6}, {"threshold": 0.6, "top_k": 3}):
        results = ours(image, candidate_labels=labels, **kwargs)
        assert_same_detections(results, theirs(image, candidate_labels=labels, **kwargs))
        for entry in results:
            assert entry["heatmap"].size == entry["overlay"].size == image.size


def test_pipeline_labels_are_the_candidate_labels_not_the_prompts():
    """As `zero-shot-object-detection`: "label" is the candidate label, whatever `hypothesis_template` made of it."""
    image = pictures("owlvit", 1)[0]
    labels = ["red circle", "cat"]
    ours = pipeline("legrad-explanation", model=tiny("owlvit").path)
    results = ours(image, candidate_labels=labels, hypothesis_template="a photo of a {}", threshold=0.0, top_k=4)
    out = LeGradExplainer(tiny("owlvit").model, tiny("owlvit").processor).explain(
        images=image, text=[f"a photo of a {label}" for label in labels], threshold=0.0, top_k=4
    )
    assert [entry["label"] for entry in results] == [labels[q] for q in out.target_ids[0].tolist()]
    assert [entry["score"] for entry in results] == pytest.approx(out.probabilities[0].tolist(), abs=1e-6)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_top_k_explains_only_the_k_highest_pairs(name, monkeypatch):
    images = pictures(name)
    explainer = LeGradExplainer(tiny(name).model, tiny(name).processor)
    every = explainer.explain(images=images, text=QUERIES[:2], threshold=0.0)
    best = explainer.explain(images=images, text=QUERIES[:2], threshold=0.0, top_k=3)
    assert every.heatmaps.shape[1] > 3 and best.heatmaps.shape[1] == 3
    torch.testing.assert_close(best.box_indices, every.box_indices[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(best.target_ids, every.target_ids[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(best.grid_maps, every.grid_maps[:, :3])
    pipe = pipeline("legrad-explanation", model=tiny(name).path)
    explained = []
    original = pipe.explainer.explain

    def counting(*args, **kwargs):
        output = original(*args, **kwargs)
        explained.append(output.heatmaps.shape[1])
        return output

    monkeypatch.setattr(pipe.explainer, "explain", counting)
    assert len(pipe(images[0], candidate_labels=QUERIES[:2], threshold=0.0, top_k=2)) == 2
    assert explained == [2]
    with pytest.raises(ValueError, match="pass `threshold` too"):
        explainer.explain(images=images, text=QUERIES[:2], top_k=2)


def test_pipeline_boxes_on_the_bright_square_in_original_coordinates():
    detector = make_bright_object_detector()
    scene = bright_scene((2, 3)).resize((96, 72))  # the processor squashes it back to 48 x 48
    ours = pipeline("legrad-explanation", model=detector.path)
    theirs = pipeline("zero-shot-object-detection", model=detector.path)
    results = ours(scene, candidate_labels=["a white square"], threshold=0.5, top_k=1)
    assert_same_detections(results, theirs(scene, candidate_labels=["a white square"], threshold=0.5, top_k=1))
    box = results[0]["box"]
    assert box["xmin"] <= 3 * 16 and box["xmax"] >= 5 * 16 and box["ymin"] <= 2 * 12 and box["ymax"] >= 4 * 12
    overlay = visualize.overlay(scene, ours(scene, candidate_labels=["a white square"], return_tensors=True)[0]["map"])
    assert results[0]["overlay"].getpixel((box["xmin"], (box["ymin"] + box["ymax"]) // 2)) == visualize.BOX_COLOR
    assert overlay.getpixel((box["xmin"], (box["ymin"] + box["ymax"]) // 2)) != visualize.BOX_COLOR


def test_owlv2_maps_and_boxes_leave_out_the_padding():
    t = tiny("owlv2")
    image = random_image(5, (OWLV2_IMAGE_SIZE, 40))  # padded at the bottom to 64 x 64 by the processor
    region = geometry.processed_region(t.processor.image_processor, *image.size)
    assert region == (0.0, 0.0, float(OWLV2_IMAGE_SIZE), float(OWLV2_IMAGE_SIZE))
    results = pipeline("legrad-explanation", model=t.path)(image, candidate_labels=["a cat"], return_tensors=True)
    out = LeGradExplainer(t.model, t.processor).explain(images=image, text=["a cat"], threshold=0.1)
    best = out.heatmaps[0, 0, :40]  # the processed square's top 40 rows are the picture
    torch.testing.assert_close(results[0]["map"], best, atol=1e-6, rtol=0)


def test_cli_writes_boxes_to_results_json(tmp_path, capsys):
    detector = make_bright_object_detector()
    folder = tmp_path / "images"
    folder.mkdir()
    bright_scene((1, 1)).save(folder / "square.png")
    random_image(0, (48, 48)).save(folder / "noise.png")
    out = tmp_path / "out"
    argv = ["explain", folder, "--model", detector.path, "--prompt", "a white square", "--out", out]
    assert main([str(a) for a in [*argv, "--threshold", "0.5", "--top-k", "2"]]) == 0
    records = json.loads((out / "results.json").read_text())
    square = [record for record in records if record["image"].endswith("square.png")]
    assert len(square) == 2 and all(record["label"] == "a white square" for record in square)
    assert square[0]["score"] >= square[1]["score"] > 0.5
    box = square[0]["box"]
    assert box["xmin"] <= 8 and box["ymin"] <= 8 and box["xmax"] >= 24 and box["ymax"] >= 24
    for record in square:
        assert (out / record["overlay"]).exists() and (out / record["heatmap"]).exists()
    assert "wrote maps" in capsys.readouterr().out
    assert main([str(a) for a in [*argv[:-2], "--out", tmp_path / "none", "--threshold", "0.99"]]) == 0
    none = [
        {"image": str(folder / name), "label": None, "score": None, "box": None} for name in ("noise.png", "square.png")
    ]
    assert json.loads((tmp_path / "none" / "results.json").read_text()) == none  # processed, with no box
    assert "wrote maps for 0 image(s)" in (stdout := capsys.readouterr().out)
    assert "2 image(s) with no box above the threshold" in stdout


@pytest.mark.parametrize("flag", ["--text-relevance", "--no-correction"])
def test_cli_refuses_dual_encoder_flags_for_a_detector(flag, tmp_path, capsys):
    random_image(0, (48, 48)).save(tmp_path / "a.png")
    code = main(
        ["explain", str(tmp_path / "a.png"), "--model", tiny("owlvit").path, "--prompt", "a cat", flag]
        + ["--out", str(tmp_path / "out")]
    )
    assert code == 2 and "--text-relevance and --no-correction are for CLIP/SigLIP" in capsys.readouterr().err


def test_cli_threshold_is_for_detectors(tmp_path, capsys):
    from tiny_models import make_clip

    random_image(0, (48, 48)).save(tmp_path / "a.png")
    code = main(
        ["explain", str(tmp_path / "a.png"), "--model", make_clip().path, "--prompt", "a cat"]
        + ["--out", str(tmp_path / "out"), "--threshold", "0.5"]
    )
    assert code != 0 and "--threshold is for detectors" in capsys.readouterr().err


# --- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"boxes": [1, 2], "threshold": 0.5}, ValueError, "not both"),
        ({"boxes": [1]}, ValueError, r"\[3\] \(one box per query\)"),
        ({"boxes": [1, 2, 36]}, ValueError, "boxes 0..35"),
        ({"boxes": [1.0, 2.0, 3.0]}, TypeError, "integer box indices"),
        ({"threshold": 1.5}, ValueError, r"in \[0, 1\)"),
        ({"targets": [0]}, ValueError, "open-vocabulary detector"),
    ],
)
def test_bad_detection_arguments_are_refused(kwargs, error, match):
    explainer = LeGradExplainer(tiny("owlvit").model, tiny("owlvit").processor)
    with pytest.raises(error, match=match):
        explainer.explain(images=pictures("owlvit", 1), text=QUERIES, **kwargs)


def test_boxes_are_refused_for_models_that_are_not_detectors():
    from tiny_models import make_clip

    clip = make_clip()
    with pytest.raises(ValueError, match="open-vocabulary detector"):
        LeGradExplainer(clip.model, clip.processor).explain(images=random_image(0), text=["a cat"], threshold=0.5)


def test_draw_box_draws_on_a_copy_and_refuses_a_bad_box():
    from PIL import Image

    image = Image.new("RGB", (40, 30), (0, 0, 0))
    drawn = visualize.draw_box(image, (5, 5, 20, 25), width=1)
    assert drawn.getpixel((5, 15)) == visualize.BOX_COLOR and drawn.getpixel((12, 15)) == (0, 0, 0)
    assert image.getpixel((5, 15)) == (0, 0, 0), "the image itself is left as it was"
    assert visualize.draw_box(image, (-10, -10, 100, 100)).size == image.size  # outside parts are clipped
    with pytest.raises(ValueError, match="xmin <= xmax"):
        visualize.draw_box(image, (20, 5, 5, 25))
