"""The bundled demo models: they load offline like Hub checkpoints, still work, and their LeGrad maps point at
the right objects; `run_demo` writes its pictures.

Held-out scenes come from a seed that no training batch used (training seeds are 1_000_000 and up).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoProcessor,
    CLIPModel,
    CLIPProcessor,
    SiglipModel,
    SiglipProcessor,
    ViTForImageClassification,
)

from transformers_legrad import LeGradExplainer, demo
from transformers_legrad.evaluation import metrics, synthetic

HELD_OUT_SEED = 31_337
VIT_MARGIN = 1.5  # the "vit" task: name the largest object, at least this many times larger than any other

# Conservative bounds for 200 held-out scenes: the model cards report the figures on 1000 (>= 0.9 accuracy).
MIN_ACCURACY = 0.9
MIN_PRECISION_AT_1 = 0.9
MIN_RECALL_AT_M = {"clip": 0.75, "siglip": 0.75}
MIN_POINTING = {"clip": 0.5, "siglip": 0.5, "vit": 0.6}


class _Loaded(dict):
    """Each bundled model (and its processor) loaded once, when a test first asks for it."""

    def __missing__(self, name):
        self[name] = demo.load(name)
        return self[name]


@pytest.fixture(scope="module")
def loaded():
    return _Loaded()


@pytest.fixture(scope="module")
def held_out():
    return synthetic.generate(200, seed=HELD_OUT_SEED)


def _pixels(processor, scenes) -> torch.Tensor:
    return processor(images=[scene.image for scene in scenes], return_tensors="pt")["pixel_values"]


# --- loading ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "model_class", "processor_class"),
    [("clip", CLIPModel, CLIPProcessor), ("siglip", SiglipModel, SiglipProcessor)],
)
def test_dual_encoders_load_offline(name, model_class, processor_class):
    path = demo.model_path(name)
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    model = AutoModel.from_pretrained(path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    assert type(model) is model_class and isinstance(processor, processor_class)
    assert model.config.vision_config.image_size == 64 and model.config.vision_config.patch_size == 8
    tokens = processor.tokenizer("a red circle")["input_ids"]
    assert tokens[0] == model.config.text_config.bos_token_id and tokens[-1] == model.config.text_config.eos_token_id
    assert processor.tokenizer.unk_token_id not in tokens
    image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    assert image_processor(images=Image.new("RGB", (64, 64)), return_tensors="pt")["pixel_values"].shape == (
        1,
        3,
        64,
        64,
    )


def test_vit_loads_offline():
    path = demo.model_path("vit")
    model = AutoModelForImageClassification.from_pretrained(path, local_files_only=True)
    assert type(model) is ViTForImageClassification
    assert [model.config.id2label[i] for i in range(len(synthetic.LABELS))] == list(synthetic.LABELS)
    for loader in (AutoImageProcessor, AutoProcessor):
        processor = loader.from_pretrained(path, local_files_only=True)
        assert processor(images=Image.new("RGB", (64, 64)), return_tensors="pt")["pixel_values"].shape == (1, 3, 64, 64)


def test_bundle_is_small():
    total = sum(f.stat().st_size for name in demo.MODEL_NAMES for f in demo.model_path(name).rglob("*") if f.is_file())
    assert total <= 15e6


def test_model_path_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="clip, siglip, vit"):
        demo.model_path("resnet")
    monkeypatch.setattr(demo, "_MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="not installed"):
        demo.model_path("clip")


# --- the models work --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["clip", "siglip"])
@torch.no_grad()
def test_dual_encoder_held_out_retrieval(name, loaded, held_out):
    """The best of all colour-shape captions names an object of the scene (precision@1; the model cards report the
    figures on 1000 held-out scenes), and each object's caption ranks among the top m (m = objects in the scene)."""
    model, processor = loaded[name]
    prompts = [synthetic.caption(label) for label in synthetic.LABELS]
    padding = "max_length" if name == "siglip" else True
    text = processor.tokenizer(prompts, padding=padding, return_tensors="pt")
    texts = model.get_text_features(**text)
    images = model.get_image_features(pixel_values=_pixels(processor, held_out))
    texts, images = (getattr(x, "pooler_output", x) for x in (texts, images))
    scores = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    found = total = precise = 0
    for scene, row in zip(held_out, scores, strict=True):
        top = {synthetic.LABELS[i] for i in row.topk(len(scene.objects)).indices.tolist()}
        found += sum(label in top for label in scene.labels)
        total += len(scene.objects)
        precise += synthetic.LABELS[int(row.argmax())] in scene.labels
    assert precise / len(held_out) >= MIN_PRECISION_AT_1
    assert found / total >= MIN_RECALL_AT_M[name]


@torch.no_grad()
def test_vit_held_out_accuracy(loaded):
    model, processor = loaded["vit"]
    scenes = [s for s in synthetic.generate(128, seed=HELD_OUT_SEED) if synthetic.largest_object(s, VIT_MARGIN)]
    targets = torch.tensor([synthetic.LABELS.index(synthetic.largest_object(s, VIT_MARGIN).label) for s in scenes])
    predicted = model(pixel_values=_pixels(processor, scenes)).logits.argmax(-1)
    assert len(scenes) >= 64
    assert (predicted == targets).float().mean() >= MIN_ACCURACY


# --- the maps point at the objects ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_dual_encoder_maps_point_at_the_prompted_object(name, loaded, held_out):
    model, processor = loaded[name]
    explainer = LeGradExplainer(model, processor)
    scenes = [s for s in held_out if len(s.objects) >= 2][:12]
    hits, chance = [], []
    for scene in scenes:
        out = explainer.explain(images=scene.image, text=scene.captions)
        assert out.heatmaps.shape == (1, len(scene.objects), 64, 64)
        for k, obj in enumerate(scene.objects):
            hits.append(metrics.pointing_game(out.heatmaps[0, k].numpy(), obj.mask))
            chance.append(obj.mask.mean())
    assert np.mean(hits) >= MIN_POINTING[name] > 4 * np.mean(chance)


def test_vit_maps_point_at_the_largest_object(loaded, held_out):
    model, processor = loaded["vit"]
    explainer = LeGradExplainer(model, processor)
    scenes = [s for s in held_out if len(s.objects) >= 2 and synthetic.largest_object(s, VIT_MARGIN)][:12]
    targets = [synthetic.largest_object(s, VIT_MARGIN) for s in scenes]
    out = explainer.explain(
        images=[s.image for s in scenes], targets=torch.tensor([[synthetic.LABELS.index(t.label)] for t in targets])
    )
    hits = [metrics.pointing_game(out.heatmaps[b, 0].numpy(), t.mask) for b, t in enumerate(targets)]
    assert np.mean(hits) >= MIN_POINTING["vit"]


# --- the demo -----------------------------------------------------------------------------------------------------
def test_example_scenes():
    examples = demo.example_scenes(3)
    assert len(examples) == 3
    assert [e.prompts for e in examples] == [e.prompts for e in demo.example_scenes(3)]
    for example in examples:
        assert example.image.size == (64, 64) and 2 <= len(example.prompts) <= 3
        assert example.prompts == [f"a {obj.label}" for obj in example.scene.objects]
        assert example.absent_prompt not in example.prompts
    with pytest.raises(ValueError, match="positive"):
        demo.example_scenes(0)


def test_run_demo_writes_pictures(tmp_path):
    written = demo.run_demo(tmp_path / "out", n=2)
    examples = demo.example_scenes(2)
    # per scene: the scene, one overlay per prompt (objects + one absent), the grid
    assert len(written) == sum(len(e.prompts) + 3 for e in examples)
    assert all(path.is_file() and path.parent == tmp_path / "out" for path in written)
    assert sum(path.name.endswith("_grid.png") for path in written) == 2
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and min(image.size) >= 256


# --- the model cards --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", demo.MODEL_NAMES)
def test_model_card_reports_the_bundled_models_figures(name, tmp_path, monkeypatch):
    """model_cards/demo-NAME.md is what the training script renders from the bundled `training_metrics.json`."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("train_demo_models", root / "scripts" / "train_demo_models.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look their module up there
    spec.loader.exec_module(script)
    record = json.loads((demo.model_path(name) / "training_metrics.json").read_text())
    rendered = script.write_card(name, record, tmp_path).read_text()
    checked_in = root / "model_cards" / f"demo-{name}.md"
    assert checked_in.read_text() == rendered, (
        f"{checked_in} is stale: python scripts/train_demo_models.py --model {name} --evaluate --cards model_cards"
    )
    held_out = record["metrics"]["held_out"]
    accuracy = held_out["accuracy"] if name == "vit" else held_out["precision_at_1"]
    assert accuracy >= 0.9 and f"{accuracy:.3f}" in rendered
