"""`legrad export`: a Hub-ready folder that loads in a fresh process with trust_remote_code and gives maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from huggingface_hub import ModelCard

from transformers_legrad.cli import main


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, base_model", [("clip", "openai/clip-vit-base-patch16"), ("vit", "google/vit-base-patch16-224")]
)
def test_export_reloads_in_a_fresh_process(family, base_model, request, tmp_path, capsys):
    tiny = request.getfixturevalue(family)
    out = tmp_path / "exported"
    assert main(["export", tiny.path, "--out", str(out), "--base-model", base_model]) == 0, capsys.readouterr().err
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "legrad_pipeline.py", "README.md", "preprocessor_config.json"} <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((out / "config.json").read_text())
    assert config["custom_pipelines"]["legrad-explanation-hub"]["impl"] == "legrad_pipeline.LeGradExplanationPipeline"
    card = ModelCard((out / "README.md").read_text())
    assert card.data.base_model == base_model and "legrad" in card.data.tags

    call = 'pipe(image, candidate_labels=["a cat", "a dog"])' if family == "clip" else "pipe(image, top_k=2)"
    script = textwrap.dedent(f"""
        import sys
        from PIL import Image
        from transformers import pipeline
        assert "transformers_legrad" not in sys.modules
        pipe = pipeline(model={str(out)!r}, trust_remote_code=True)
        image = Image.new("RGB", (60, 40), (200, 30, 30))
        results = {call}
        assert len(results) == 2, results
        assert all(r["heatmap"].size == (60, 40) and r["overlay"].mode == "RGB" for r in results)
        print("OK", type(pipe).__name__, type(pipe.model).__name__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK LeGradExplanationPipeline" in result.stdout


def test_export_of_a_local_folder_needs_its_hub_id(clip, tmp_path, capsys):
    assert main(["export", clip.path, "--out", str(tmp_path / "x")]) == 2
    assert "--base-model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "family, auto_class",
    [
        ("clip", "CLIPModel"),
        ("vit", "ViTForImageClassification"),
        ("dinov2", "Dinov2Model"),
        ("aimv2", "Aimv2Model"),  # a dual encoder that transformers maps to no zero-shot Auto class
        ("blip", "BlipForImageTextRetrieval"),  # the zero-shot Auto class would load it as BlipModel
    ],
)
def test_the_exported_pipeline_loads_with_its_own_family_auto_class_only(family, auto_class, request, tmp_path):
    """A backbone folder must not come back through `AutoModelForImageClassification` (an untrained head)."""
    from transformers import pipeline

    from transformers_legrad.export import CUSTOM_TASK, export_pipeline

    from tiny_aimv2 import make_aimv2
    from tiny_backbones import make_backbone
    from tiny_blip import make_blip

    factories = {"dinov2": lambda: make_backbone("dinov2"), "aimv2": make_aimv2, "blip": make_blip}
    tiny = factories[family]() if family in factories else request.getfixturevalue(family)
    pipe = pipeline("legrad-explanation", model=tiny.path)
    out = export_pipeline(pipe, tmp_path / "exported", model_id="me/tiny")
    assert json.loads((out / "config.json").read_text())["custom_pipelines"][CUSTOM_TASK]["pt"] == [auto_class]
