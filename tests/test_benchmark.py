"""The localization benchmark on tiny random models: result schema, table, manifests, and the command line."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from PIL import Image

from transformers_legrad import cli
from transformers_legrad.evaluation import benchmark, synthetic
from transformers_legrad.evaluation.baselines import METHODS
from transformers_legrad.evaluation.benchmark import format_table, run_benchmark
from transformers_legrad.evaluation.data import ManifestError, examples_from_scenes, read_manifest, write_manifest

ENTRY_KEYS = {*benchmark.METRICS, "pos_curve", "neg_curve"}


@pytest.fixture(scope="module")
def scenes():
    return synthetic.generate(2, seed=11)


def timed(function, *args, **kwargs):
    """`function(*args, **kwargs)` and the wall time it took, in milliseconds, as the test measured it."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, 1000 * (time.perf_counter() - start)


def _check_result(result, methods, n, wall_ms, perturbation=True):
    """`wall_ms`: the test's own wall clock around `run_benchmark`, which bounds the explain time it reports."""
    assert set(result) == {"model", "model_class", "n", "data", "settings", "chance", "methods"}
    assert result["n"] == n and list(result["methods"]) == list(methods)
    assert 0 < result["chance"]["pointing_game"] < 1
    for values in result["methods"].values():
        assert set(values) == ENTRY_KEYS
        for key in ("miou", "pixel_acc", "map", "fg_ap", "p_miou", "pointing_game"):
            assert 0.0 <= values[key] <= 1.0
        if perturbation:
            assert np.isfinite([values["pos_auc"], values["neg_auc"]]).all()
            assert len(values["pos_curve"]) == len(values["neg_curve"]) == 10
            assert values["pos_curve"][0] == pytest.approx(values["neg_curve"][0])  # both start unperturbed
        else:
            assert values["pos_auc"] is values["neg_auc"] is values["pos_curve"] is None
    # Every method explains each of the n examples once (after a warm-up call), all within the measured wall time.
    explain_ms = [values["ms_per_image"] * n for values in result["methods"].values()]
    assert all(ms > 0 for ms in explain_ms) and sum(explain_ms) <= wall_ms, (explain_ms, wall_ms)
    json.dumps(result)  # JSON-ready


def test_examples_from_scenes(scenes):
    prompts = examples_from_scenes(scenes, seed=11)
    assert len(prompts) == sum(len(scene.objects) for scene in scenes)
    first = scenes[0].objects[0]
    assert prompts[0].prompt == synthetic.caption(first.label) and prompts[0].label is None
    assert np.array_equal(prompts[0].mask, first.mask) and prompts[0].image is scenes[0].image
    assert prompts[0].source == "synthetic seed=11 scene=0 object=0"
    labels = examples_from_scenes(scenes, query="label")
    assert labels[0].label == first.label and labels[0].prompt is None and labels[0].query == first.label
    with pytest.raises(ValueError, match="'prompt' or 'label'"):
        examples_from_scenes(scenes, query="caption")


def test_run_benchmark_dual_encoder(clip, scenes):
    examples = examples_from_scenes(scenes)
    result, wall_ms = timed(
        run_benchmark, clip.model, clip.processor, examples, n=3, model_name="tiny-clip", data={"source": "t"}
    )
    _check_result(result, METHODS, n=3, wall_ms=wall_ms)
    assert result["model"] == "tiny-clip" and result["model_class"] == "CLIPModel" and result["data"] == {"source": "t"}
    table = format_table(result)
    lines = table.splitlines()
    assert lines[0] == "tiny-clip (CLIPModel), 3 examples"
    assert lines[2].startswith("| method") and "mIoU" in lines[2] and "ms/image" in lines[2]
    assert len(lines) == 4 + len(METHODS) + 2
    for method in METHODS:
        assert any(line.startswith(f"| {method} ") for line in lines)
    assert lines[-1].startswith("pointing chance")


def test_run_benchmark_siglip_without_perturbation(siglip, scenes):
    methods = ("legrad", "raw_attention")
    result, wall_ms = timed(
        run_benchmark, siglip.model, siglip.processor, examples_from_scenes(scenes), methods, n=2, perturbation=False
    )
    _check_result(result, methods, n=2, wall_ms=wall_ms, perturbation=False)
    assert "| -" in format_table(result).splitlines()[4]


def test_run_benchmark_classifier(vit, scenes):
    examples = [dataclasses.replace(e, label=i % 5) for i, e in enumerate(examples_from_scenes(scenes, query="label"))]
    result, wall_ms = timed(run_benchmark, vit.model, vit.processor, examples, ("legrad", "gradcam"), n=2)
    _check_result(result, ("legrad", "gradcam"), n=2, wall_ms=wall_ms)


def test_run_benchmark_errors(clip, vit, scenes):
    with pytest.raises(ValueError, match="unknown target label"):
        run_benchmark(vit.model, vit.processor, examples_from_scenes(scenes, query="label"), ("legrad",), n=1)
    with pytest.raises(ValueError, match="is a classifier; the example has no label"):
        run_benchmark(vit.model, vit.processor, examples_from_scenes(scenes), ("legrad",), n=1)
    with pytest.raises(ValueError, match="explains text prompts"):
        run_benchmark(clip.model, clip.processor, examples_from_scenes(scenes, query="label"), ("legrad",), n=1)
    with pytest.raises(ValueError, match="no examples"):
        run_benchmark(clip.model, clip.processor, [], ("legrad",))
    with pytest.raises(ValueError, match="unknown methods"):
        run_benchmark(clip.model, clip.processor, examples_from_scenes(scenes), ("legrad", "lime"))
    with pytest.raises(ValueError, match="positive integer"):
        run_benchmark(clip.model, clip.processor, examples_from_scenes(scenes), n=0)


def _write_scenes(folder, scenes, query="prompt"):
    """Images and masks as PNG files and a manifest with relative paths; returns (manifest, in-memory examples)."""
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    records, examples = [], examples_from_scenes(scenes, query=query)
    index = 0
    for scene_index, scene in enumerate(scenes):
        scene.image.save(folder / "images" / f"scene{scene_index}.png")
        for obj in scene.objects:
            Image.fromarray(obj.mask.astype(np.uint8) * 255).save(folder / "masks" / f"{index}.png")
            record = {"image": f"images/scene{scene_index}.png", "mask": f"masks/{index}.png"}
            record[query] = examples[index].query
            records.append(record)
            index += 1
    return write_manifest(folder / "manifest.jsonl", records), examples


@pytest.mark.slow
def test_manifest_round_trip(tmp_path, clip, scenes):
    manifest, examples = _write_scenes(tmp_path, scenes)
    read = list(read_manifest(manifest))
    assert len(read) == len(examples)
    for number, (loaded, original) in enumerate(zip(read, examples, strict=True), start=1):
        assert loaded.prompt == original.prompt and loaded.label is None
        assert np.array_equal(np.asarray(loaded.image), np.asarray(original.image))
        assert loaded.mask.dtype == bool and np.array_equal(loaded.mask, original.mask)
        assert loaded.source == f"manifest.jsonl:{number}"
    methods = ("legrad", "rollout")
    from_files = run_benchmark(clip.model, clip.processor, read_manifest(manifest), methods, n=2)
    in_memory = run_benchmark(clip.model, clip.processor, examples, methods, n=2)
    for method in methods:
        for key in ("miou", "pixel_acc", "map", "fg_ap", "p_miou", "pointing_game", "pos_auc", "neg_auc"):
            assert from_files["methods"][method][key] == pytest.approx(in_memory["methods"][method][key]), key


def test_manifest_labels_and_absolute_paths(tmp_path, scenes):
    image, mask = tmp_path / "a.png", tmp_path / "m.png"
    scenes[0].image.save(image)
    Image.fromarray(
        np.dstack([scenes[0].objects[0].mask.astype(np.uint8) * 200] * 3 + [np.full((64, 64), 255, np.uint8)])
    ).save(mask)  # RGBA
    folder = tmp_path / "sub"
    folder.mkdir()
    manifest = write_manifest(
        folder / "m.jsonl",
        [
            {"image": str(image), "label": 3, "mask": str(mask)},
            {"image": str(image), "label": "cat", "mask": str(mask)},
        ],
    )
    first, second = read_manifest(manifest)
    assert first.label == 3 and second.label == "cat" and first.prompt is None
    assert np.array_equal(first.mask, scenes[0].objects[0].mask)  # colour masks: nonzero colour, alpha ignored


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"prompt": "a cat", "mask": "m.png"}', "line 2: missing field 'image'"),
        ('{"image": "a.png", "prompt": "a cat"}', "line 2: missing field 'mask'"),
        ('{"image": "a.png", "mask": "m.png"}', "line 2: give exactly one of 'prompt'"),
        ('{"image": "a.png", "mask": "m.png", "prompt": "a", "label": 1}', "got both"),
        ('{"image": "a.png", "mask": "m.png", "prompt": ""}', "'prompt' must be a non-empty string"),
        ('{"image": "a.png", "mask": "m.png", "label": 1.5}', "'label' must be a class name or an integer"),
        ('{"image": "gone.png", "mask": "m.png", "prompt": "a cat"}', "line 2: image file 'gone.png' not found"),
        ('{"image": "a.png", "mask": "gone.png", "prompt": "a cat"}', "line 2: mask file 'gone.png' not found"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, line, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "m.png")
    manifest = tmp_path / "data.jsonl"
    manifest.write_text('{"image": "a.png", "mask": "m.png", "prompt": "a cat"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message) as error:
        read_manifest(manifest)
    assert "data.jsonl" in str(error.value)


def test_manifest_errors_found_while_reading(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (4, 8)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    wrong_size = write_manifest(tmp_path / "size.jsonl", [{"image": "a.png", "mask": "small.png", "prompt": "a cat"}])
    with pytest.raises(ManifestError, match="size.jsonl line 1: the mask is 4x8 but the image is 8x8"):
        next(read_manifest(wrong_size))
    broken = write_manifest(
        tmp_path / "broken.jsonl",
        [{"image": "a.png", "mask": "a.png", "prompt": "a cat"}, {"image": "broken.png", "mask": "a.png", "label": 1}],
    )
    examples = read_manifest(broken)
    assert next(examples).prompt == "a cat"
    with pytest.raises(ManifestError, match="broken.jsonl line 2: cannot read the image"):
        next(examples)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ManifestError, match="holds no example"):
        read_manifest(empty)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_command_line_writes_json_table_and_figure(clip, tmp_path, capsys):
    out, figure = tmp_path / "out" / "results.json", tmp_path / "example.png"
    argv = [
        "--model",
        clip.path,
        "--n",
        "1",
        "--methods",
        "legrad,rollout",
        "--json",
        str(out),
        "--figure",
        str(figure),
    ]
    status, wall_ms = timed(cli.main, ["benchmark", *argv])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| legrad " in printed and "| rollout " in printed and f"wrote {out}" in printed
    record = json.loads(out.read_text())
    assert set(record) == {"date", "command", "machine", "versions", "runs", "model", "methods"}
    assert record["command"].startswith("legrad benchmark --model")
    (run,) = record["runs"]
    assert run["model"] == clip.path and list(run["methods"]) == ["legrad", "rollout"]
    assert record["model"] == run["model"] and record["methods"] == run["methods"]
    assert set(record["methods"]["legrad"]) >= {"miou", "pixel_acc", "map", "pointing_game", "neg_auc", "pos_auc"}
    assert 0 < record["methods"]["legrad"]["ms_per_image"] <= wall_ms  # one example
    assert len(run["weights_sha256"]) == 64
    assert run["data"] == {
        "source": "synthetic",
        "scenes": 1,
        "seed": benchmark.BENCHMARK_SEED,
        "scene_size": 64,
        "query": "prompt",
    }
    assert run["n"] == len(synthetic.generate(1, seed=benchmark.BENCHMARK_SEED)[0].objects)
    with Image.open(figure) as picture:
        assert picture.width > 3 * 160 and picture.height >= 160  # image, mask and 2 maps in a row


def test_command_line_user_errors(clip, tmp_path, capsys):
    json_path = str(tmp_path / "r.json")
    cases = [
        (["--model", clip.path, "--methods", "legrad,lime", "--json", json_path], "unknown lime"),
        (["--model", clip.path, "--manifest", str(tmp_path / "no.jsonl"), "--json", json_path], "no such manifest"),
        (["--model", str(tmp_path / "nowhere"), "--json", json_path], "no such model folder"),
        (["--model", clip.path, "--threshold", "high", "--json", json_path], "--threshold"),
    ]
    for argv, message in cases:
        assert cli.main(["benchmark", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_default_models_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from transformers_legrad import demo

    def not_installed(name):
        raise FileNotFoundError(f"the bundled demo model {name!r} is not installed")

    monkeypatch.setattr(demo, "model_path", not_installed)
    assert cli.main(["benchmark", "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "bundled demo models are not installed" in err and "--model" in err


def test_per_example_values_add_up_to_the_summary(clip, scenes):
    methods = ("legrad", "chefer")
    result = run_benchmark(clip.model, clip.processor, examples_from_scenes(scenes, seed=11), methods, per_example=True)
    records = result["examples"]
    assert len(records) == result["n"] and records[0]["source"] == "synthetic seed=11 scene=0 object=0"
    for method in methods:
        values = [record["methods"][method] for record in records]
        summary = result["methods"][method]
        assert summary["pointing_game"] == pytest.approx(np.mean([v["pointing"] for v in values]))
        assert summary["p_miou"] == pytest.approx(np.mean([v["foreground_iou"] for v in values]))
        assert summary["fg_ap"] == pytest.approx(np.mean([v["fg_ap"] for v in values]))
        assert summary["pos_auc"] == pytest.approx(np.mean([v["pos_auc"] for v in values]))
    json.dumps(result)
    assert "examples" not in run_benchmark(clip.model, clip.processor, examples_from_scenes(scenes), methods, n=1)


def test_figure_examples_start_with_a_multi_object_image():
    scenes = synthetic.generate(6, seed=3)
    examples = examples_from_scenes(scenes)
    chosen = benchmark.figure_examples(examples, 2)
    first_multi = next(scene for scene in scenes if len(scene.objects) > 1)
    assert [example.image for example in chosen] == [first_multi.image] * 2
    assert [example.prompt for example in chosen] == first_multi.captions[:2]
