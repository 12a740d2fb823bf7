"""Models dispatched by accelerate (`from_pretrained(..., device_map=..., max_memory=...)`), with some blocks kept
on the CPU and others offloaded to disk, explain with the same maps as the model loaded whole, and are left as found.

Offloaded weights sit on the `meta` device until accelerate's hooks load them for a forward, so the explainer must
find where a module executes from its hooks, not from its weights.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification

from transformers_legrad import LeGradExplainer, engine
from transformers_legrad import explainer as explainer_module
from transformers_legrad.engine import run_trunk

from tiny_models import LABELS, NUM_LAYERS, random_image


def split_map(tiny) -> dict[str, str]:
    """Every other block on disk, the rest of the vision tower split between CPU and disk."""
    if hasattr(tiny.model, "vision_model"):
        blocks, tower = "vision_model.encoder.layers", "vision_model"
        device_map = {
            "text_model": "disk",
            "text_projection": "cpu",
            "logit_scale": "cpu",
            "visual_projection": "disk",
            f"{tower}.embeddings": "cpu",
            f"{tower}.pre_layrnorm": "disk",
            f"{tower}.post_layernorm": "cpu",
        }
    else:
        blocks, tower = "vit.layers", "vit"
        device_map = {f"{tower}.embeddings": "disk", f"{tower}.layernorm": "cpu", "classifier": "disk"}
    device_map.update({f"{blocks}.{i}": "disk" if i % 2 else "cpu" for i in range(NUM_LAYERS)})
    return device_map


def load(tiny, tmp_path, how: str):
    auto = AutoModel if hasattr(tiny.model, "vision_model") else AutoModelForImageClassification
    if how == "device_map":
        placement = {"device_map": split_map(tiny)}
    else:  # "auto" with too little CPU memory for the whole model: accelerate sends the rest to disk
        size = sum(p.numel() * p.element_size() for p in tiny.model.parameters())
        placement = {"device_map": "auto", "max_memory": {"cpu": size // 2}}
    model = auto.from_pretrained(tiny.path, offload_folder=str(tmp_path / "offload"), **placement)
    devices = set(model.hf_device_map.values())
    assert devices == {"cpu", "disk"}, model.hf_device_map
    return model


def placement_state(model):
    return {
        "devices": {name: (p.device, p.dtype, p.requires_grad) for name, p in model.named_parameters()},
        "hooks": {name: type(getattr(m, "_hf_hook", None)).__name__ for name, m in model.named_modules()},
        "forward_hooks": {
            name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()
        },
        "training": {name: m.training for name, m in model.named_modules()},
    }


# CLIP's `logit_scale` is a bare parameter: accelerate warns that its device_map key names no submodule.
@pytest.mark.filterwarnings("ignore:The following device_map keys do not match")
@pytest.mark.parametrize("how", ["device_map", "auto_max_memory"])
@pytest.mark.parametrize("family", ["clip", "vit"])
def test_offloaded_model_explains_like_the_whole_model(family, how, request, tmp_path):
    tiny = request.getfixturevalue(family)
    model = load(tiny, tmp_path, how)
    image_processor = getattr(tiny.processor, "image_processor", None) or tiny.processor
    pixel_values = image_processor(images=[random_image(s) for s in range(2)], return_tensors="pt")["pixel_values"]
    before = placement_state(model)
    with torch.no_grad():
        output_before = model(pixel_values=pixel_values, **_text_inputs(tiny))
    for layers in (None, "all"):
        kwargs = {"text": LABELS[:3]} if family == "clip" else {"targets": [0, 2, 4]}
        kwargs["layers"] = layers
        whole = LeGradExplainer(tiny.model, tiny.processor).explain(pixel_values=pixel_values, **kwargs)
        split = LeGradExplainer(model, tiny.processor).explain(pixel_values=pixel_values, **kwargs)
        assert whole.grid_maps.abs().max() > 0
        torch.testing.assert_close(split.grid_maps, whole.grid_maps, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(split.scores, whole.scores, atol=1e-5, rtol=1e-5)
    assert placement_state(model) == before
    with torch.no_grad():
        output_after = model(pixel_values=pixel_values, **_text_inputs(tiny))
    first = output_before.logits_per_image if family == "clip" else output_before.logits
    second = output_after.logits_per_image if family == "clip" else output_after.logits
    torch.testing.assert_close(first, second, atol=0, rtol=0)


def _text_inputs(tiny) -> dict:
    if not hasattr(tiny.model, "text_model"):
        return {}
    encoded = tiny.processor.tokenizer(LABELS[:3], return_tensors="pt", padding=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@pytest.mark.filterwarnings("ignore:The following device_map keys do not match")
def test_blocks_offloaded_to_disk_are_recomputed_not_recorded(vit, tmp_path, monkeypatch):
    """A recorded tail would keep a disk-offloaded block's loaded weights alive until its backward; such blocks keep
    only their inputs (the odd blocks of `split_map` are on disk, the even ones on the CPU)."""
    model = load(vit, tmp_path, "device_map")
    recorded = {}

    def spy(*args, **kwargs):
        capture = run_trunk(*args, **kwargs)
        recorded.update({i: isinstance(state, engine.RecordedTail) for i, state in capture.block_states.items()})
        return capture

    monkeypatch.setattr(explainer_module, "run_trunk", spy)
    pixel_values = vit.processor(images=[random_image(0)], return_tensors="pt")["pixel_values"]
    split = LeGradExplainer(model, vit.processor).explain(pixel_values=pixel_values, targets=[1], layers="all")
    assert recorded == {i: i % 2 == 0 for i in range(NUM_LAYERS)}
    whole = LeGradExplainer(vit.model, vit.processor).explain(pixel_values=pixel_values, targets=[1], layers="all")
    torch.testing.assert_close(split.grid_maps, whole.grid_maps, atol=1e-6, rtol=1e-5)
