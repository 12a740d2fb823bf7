"""Whole data sets: `legrad explain --dataset` (sharded Parquet), across processes, resumed after an interruption."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets", reason="needs the datasets extra: pip install -e '.[datasets]'")
pytest.importorskip("pyarrow", reason="needs the datasets extra: pip install -e '.[datasets]'")

import torch  # noqa: E402

from transformers_legrad import datasets_io  # noqa: E402
from transformers_legrad.cli import main  # noqa: E402
from transformers_legrad.evaluation import synthetic  # noqa: E402

SCENES = 7
SHARD_SIZE = 2  # 4 shards: process 0 writes 0 and 2, process 1 writes 1 and 3


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    """An imagefolder of generated scenes whose metadata lists each scene's captions."""
    return datasets_io.save_scenes(synthetic.generate(SCENES, seed=11), tmp_path_factory.mktemp("scenes"))


def explain_args(model, dataset, out, *extra):
    return [
        "explain",
        "--dataset",
        str(dataset),
        "--model",
        str(model),
        "--prompt-column",
        "prompts",
        "--shard-size",
        str(SHARD_SIZE),
        "--batch-size",
        "2",
        "--device",
        "cpu",  # also where a GPU is present: the runs compared must run the same way
        "--out",
        str(out),
        *extra,
    ]


def run_single_threaded(argv) -> int:
    """One process on one thread, as each process of the distributed run (torchrun sets OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as probe:  # binding needs no network
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def table(out) -> dict:
    """Every column of the results, read back with `datasets`, as plain Python values."""
    return datasets_io.read_results(out).to_dict()


def shard_names(out) -> list[str]:
    return sorted(path.name for path in Path(out).glob("shard-*.parquet"))


def test_shards_are_disjoint_and_cover_the_rows():
    shards = datasets_io.shard_rows(10, 3)
    assert [list(r) for r in shards] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    for processes in (1, 2, 3, 5):
        taken = [i for p in range(processes) for i in datasets_io.process_shards(len(shards), p, processes)]
        assert sorted(taken) == list(range(len(shards)))
    with pytest.raises(ValueError, match="index must be"):
        datasets_io.process_shards(4, 2, 2)


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(clip, scene_folder, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    assert run_single_threaded(explain_args(clip.path, scene_folder, single)) == 0

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "cache")
    env.pop("OMP_NUM_THREADS", None)
    # On a machine without a GPU, `--multi_gpu` is what starts several processes (torchrun); they join a CPU
    # (gloo) group. `accelerate launch --cpu` starts one process unless mpirun is configured.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    command = [*launch, "-m", "transformers_legrad.cli", *explain_args(clip.path, scene_folder, double)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0/2: wrote 2 shard(s)" in result.stdout and "process 1/2: wrote 2 shard(s)" in result.stdout

    assert shard_names(single) == shard_names(double) == [f"shard-0000{i}-of-00004.parquet" for i in range(4)]
    one, two = table(single), table(double)
    assert one == two  # the same rows, in the same order, with bit-identical scores and maps
    assert sorted(set(one["row"])) == list(range(SCENES))
    captions = [scene.captions for scene in synthetic.generate(SCENES, seed=11)]
    assert [(row, label) for row, label in zip(one["row"], one["label"], strict=True)] == [
        (row, caption) for row, scene_captions in enumerate(captions) for caption in scene_captions
    ]
    assert one["image_id"][0] == "scene-00000.png"
    for grid, shape in zip(one["grid_map"], one["grid_shape"], strict=True):
        assert len(grid) == shape[0] * shape[1] and np.isfinite(grid).all()

    # the same command again finds every shard complete: nothing is redone
    assert run_single_threaded(explain_args(clip.path, scene_folder, double)) == 0
    assert table(double) == one


def test_an_interrupted_run_resumes_to_the_same_content(clip, scene_folder, tmp_path, monkeypatch, capsys):
    complete, interrupted = tmp_path / "complete", tmp_path / "interrupted"
    assert run_single_threaded(explain_args(clip.path, scene_folder, complete)) == 0

    real_write = datasets_io.results._ShardWriter.write
    written = []

    def write_then_stop(self, index, records, failed):
        if written:
            raise KeyboardInterrupt  # stopped while the second shard was being written
        real_write(self, index, records, failed)
        written.append(index)

    monkeypatch.setattr(datasets_io.results._ShardWriter, "write", write_then_stop)
    assert run_single_threaded(explain_args(clip.path, scene_folder, interrupted)) == 130
    monkeypatch.setattr(datasets_io.results._ShardWriter, "write", real_write)
    assert shard_names(interrupted) == ["shard-00000-of-00004.parquet"]
    with pytest.raises(datasets_io.DatasetError, match="1 of 4 shards present"):
        datasets_io.read_results(interrupted)
    # a temporary file left by a process killed mid-write is neither read nor kept
    stale = interrupted / ".shard-00002-of-00004.parquet.tmp-999999"
    stale.write_bytes(b"half a parquet file")
    first_shard = (interrupted / "shard-00000-of-00004.parquet").stat().st_mtime_ns
    capsys.readouterr()

    assert run_single_threaded(explain_args(clip.path, scene_folder, interrupted)) == 0
    assert "wrote 3 shard(s) (5 images" in capsys.readouterr().out
    assert (interrupted / "shard-00000-of-00004.parquet").stat().st_mtime_ns == first_shard  # not redone
    assert not stale.exists()
    assert table(interrupted) == table(complete)


def test_a_run_with_other_settings_is_refused_in_the_same_folder(clip, scene_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_single_threaded(explain_args(clip.path, scene_folder, out)) == 0
    capsys.readouterr()
    assert main(explain_args(clip.path, scene_folder, out, "--layers", "all")) == 2
    error = capsys.readouterr().err
    assert "holds results of another run" in error and "layers" in error and "--out" in error


def test_fixed_prompts_on_a_parquet_file_and_pngs(clip, tmp_path, capsys):
    data = datasets_io.save_scenes(synthetic.generate(3, seed=5), tmp_path / "data", layout="parquet")
    out = tmp_path / "out"
    argv = ["explain", "--dataset", data, "--model", clip.path, "--prompt", "a red circle", "--prompt", "a cat"]
    assert main([str(a) for a in [*argv, "--out", out, "--save-png", "--id-column", "label"]]) == 0
    results = table(out)
    rows = len(datasets.load_dataset("parquet", data_files=str(data), split="train"))
    assert len(results["row"]) == 2 * rows
    assert results["label"][:2] == ["a red circle", "a cat"]
    assert all(abs(a + b - 1.0) < 1e-5 for a, b in zip(results["score"][::2], results["score"][1::2], strict=True))
    assert all((out / path).is_file() for path in results["heatmap_png"] + results["overlay_png"])
    assert results["class_id"] == [None] * len(results["row"])
    # what plain `datasets` reads back is the same
    plain = datasets.load_dataset("parquet", data_files=str(out / "shard-*.parquet"), split="train")
    assert plain["label"] == results["label"]


def test_class_label_column_gives_prompts_and_ids_name_the_files(clip, tmp_path):
    folder = tmp_path / "classes"
    for index, scene in enumerate(synthetic.generate(4, seed=2)):
        (folder / ("red", "blue")[index % 2]).mkdir(parents=True, exist_ok=True)
        scene.image.save(folder / ("red", "blue")[index % 2] / f"{index}.png")
    out = tmp_path / "out"
    argv = ["explain", "--dataset", folder, "--model", clip.path, "--prompt-column", "label"]
    assert main([str(a) for a in [*argv, "--prompt-template", "a {} object", "--out", out]]) == 0
    results = table(out)
    assert sorted(zip(results["image_id"], results["label"], strict=True)) == [
        ("blue/1.png", "a blue object"),
        ("blue/3.png", "a blue object"),
        ("red/0.png", "a red object"),
        ("red/2.png", "a red object"),
    ]


def test_classifier_top_k(vit, tmp_path):
    data = datasets_io.save_scenes(synthetic.generate(3, seed=5), tmp_path / "data")
    out = tmp_path / "out"
    assert main(["explain", "--dataset", str(data), "--model", str(vit.path), "--top-k", "2", "--out", str(out)]) == 0
    results = table(out)
    assert results["query_index"] == [0, 1] * 3
    assert all(isinstance(class_id, int) for class_id in results["class_id"])
    assert all(a >= b for a, b in zip(results["score"][::2], results["score"][1::2], strict=True))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt-column", "nope"], "no column 'nope'"),
        (["--image-column", "nope", "--prompt", "a"], "no column 'nope'"),
        ([], "give --prompt TEXT"),
        (["--prompt", "a", "--prompt-column", "prompts"], "not both"),
        (["--split", "test", "--prompt", "a"], "no split 'test'"),
    ],
)
def test_bad_data_set_inputs_are_named(clip, scene_folder, tmp_path, capsys, extra, message):
    argv = ["explain", "--dataset", str(scene_folder), "--model", str(clip.path), "--out", str(tmp_path / "o")]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_missing_data_set_and_mixed_inputs(clip, scene_folder, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["explain", "--dataset", "./nowhere", "--model", str(clip.path), "--prompt", "a", "--out", out]) == 2
    assert "no such data set" in capsys.readouterr().err
    assert main(["explain", str(scene_folder), "--dataset", str(scene_folder), "--model", "x", "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["explain", str(scene_folder), "--shard-size", "3", "--model", "x", "--out", out]) == 2
    assert "goes with --dataset" in capsys.readouterr().err


def test_benchmark_reads_a_data_set_with_masks(clip, tmp_path):
    data = datasets_io.save_scenes(synthetic.generate(3, seed=5), tmp_path / "data", layout="parquet")
    rows = len(datasets.load_dataset("parquet", data_files=str(data), split="train"))
    report = tmp_path / "bench.json"
    argv = ["benchmark", "--model", str(clip.path), "--dataset", str(data), "--prompt-column", "prompt"]
    argv += ["--methods", "legrad", "--no-perturbation", "--json", str(report)]
    assert main(argv) == 0
    result = json.loads(report.read_text())["runs"][0]
    assert result["n"] == rows
    assert result["data"]["source"] == "dataset"
    assert 0.0 <= result["methods"]["legrad"]["pointing_game"] <= 1.0


def test_examples_from_a_data_set_match_the_scenes(tmp_path):
    scenes = synthetic.generate(2, seed=8)
    data = datasets_io.save_scenes(scenes, tmp_path / "data", layout="parquet")
    dataset = datasets_io.read_dataset(data)
    examples = list(datasets_io.examples_from_dataset(dataset, query_column="prompt"))
    expected = [(obj.caption, obj.mask) for scene in scenes for obj in scene.objects]
    assert [example.prompt for example in examples] == [caption for caption, _ in expected]
    for example, (_, mask) in zip(examples, expected, strict=True):
        assert np.array_equal(example.mask, mask)
    assert np.array_equal(np.asarray(examples[0].image), np.asarray(scenes[0].image))
    with pytest.raises(datasets_io.DatasetError, match="--mask-column"):
        next(datasets_io.examples_from_dataset(dataset, query_column="prompt", mask_column="segmentation"))


def test_missing_run_shards_are_reported(tmp_path):
    with pytest.raises(datasets_io.DatasetError, match="no result shards"):
        datasets_io.read_results(tmp_path)


def test_unlabelled_class_label_rows_are_refused_not_wrapped():
    """`datasets` marks an unlabelled row of a ClassLabel column with -1; it must not become the last class."""
    features = datasets.Features({"label": datasets.ClassLabel(names=["cat", "dog"])})
    dataset = datasets.Dataset.from_dict({"label": [0, -1]}, features=features)
    query = datasets_io.DatasetQuery(column="label", template="a photo of a {}")
    assert datasets_io.reading._row_queries(dataset, query, True, range(0, 1)) == [("a photo of a cat",)]
    with pytest.raises(datasets_io.DatasetError, match=r"row 1: .*no label \(-1\)"):
        datasets_io.reading._row_queries(dataset, query, True, range(0, 2))


def test_image_ids_are_relative_to_the_data_set_folder_wherever_the_command_runs(clip, tmp_path, monkeypatch):
    folder = tmp_path / "csvset"
    scenes = synthetic.generate(2, seed=4)
    for name, scene in zip(("cats", "dogs"), scenes, strict=True):
        (folder / name).mkdir(parents=True)
        scene.image.save(folder / name / "001.png")
    (folder / "data.csv").write_text("image,prompt\ncats/001.png,a red circle\ndogs/001.png,a blue square\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "out"
    argv = ["explain", "--dataset", folder / "data.csv", "--model", clip.path, "--image-column", "image"]
    assert main([str(a) for a in [*argv, "--prompt-column", "prompt", "--out", out]]) == 0
    assert table(out)["image_id"] == ["cats/001.png", "dogs/001.png"]


def test_a_fixed_class_for_a_classifier_benchmark(tmp_path):
    data = datasets_io.save_scenes(synthetic.generate(2, seed=8), tmp_path / "data", layout="parquet")
    dataset = datasets_io.read_dataset(data)
    examples = list(datasets_io.examples_from_dataset(dataset, prompt="red circle", query="label"))
    assert examples and all(example.label == "red circle" and example.prompt is None for example in examples)


def test_a_bad_prompt_template_is_named_and_does_not_claim_the_folder(clip, scene_folder, tmp_path, capsys):
    with pytest.raises(datasets_io.DatasetError, match="--prompt-template"):
        datasets_io.DatasetQuery(column="prompts", template="a photo of {label}")
    out = tmp_path / "out"
    argv = ["explain", "--dataset", str(scene_folder), "--model", str(clip.path), "--prompt-column", "prompts"]
    assert main([*argv, "--prompt-template", "a photo of {label}", "--out", str(out)]) == 2
    assert "--prompt-template" in capsys.readouterr().err
    assert run_single_threaded([*argv, "--prompt-template", "a photo of {}", "--out", str(out)]) == 0
    assert len(table(out)["row"]) > 0
