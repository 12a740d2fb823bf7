"""`legrad explain` with video and audio classifiers: the strip PNG and GIF per clip and class, the spectrogram
figure per clip and class, results.json (with the relevance over time for audio), and the errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile
from PIL import Image
from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the task)
from transformers_legrad.cli import main

from tiny_audio import SAMPLING_RATE, make_ast, samples_for_frames, tone_burst
from tiny_models import random_image
from tiny_video import FRAME_SIZE, NUM_FRAMES, make_videomae, random_clip


@pytest.fixture(scope="module")
def videomae():
    return make_videomae()


@pytest.fixture(scope="module")
def ast():
    return make_ast()


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def clips(tmp_path):
    """A folder of 6 frames and a 5-frame GIF."""
    folder = tmp_path / "walk"
    folder.mkdir()
    for index, frame in enumerate(random_clip(0, 6, (FRAME_SIZE, FRAME_SIZE))):
        frame.save(folder / f"frame{index}.png")
    frames = random_clip(1, 5, (FRAME_SIZE, FRAME_SIZE))
    gif = tmp_path / "jump.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    return folder, gif


@pytest.fixture()
def wav_files(tmp_path):
    folder = tmp_path / "sounds"
    folder.mkdir()
    paths = []
    for index, frames in enumerate((50, 80)):
        paths.append(folder / f"clip{index}.wav")
        wave = tone_burst(samples_for_frames(frames), start=0.1, duration=0.1, seed=index)
        soundfile.write(paths[-1], wave, SAMPLING_RATE, subtype="FLOAT")
    return paths


def test_explain_video_clips_writes_strips_gifs_and_results(videomae, clips, tmp_path, capsys):
    folder, gif = clips
    out = tmp_path / "out"
    code, stdout, stderr = run(
        ["explain", folder, gif, "--video", "--model", videomae.path, "--top-k", "2", "--out", out, "--fps", "5"],
        capsys,
    )
    assert code == 0, stderr
    assert "wrote maps for 2 video clip(s)" in stdout
    records = json.loads((out / "results.json").read_text())
    assert [record["video"] for record in records] == [str(folder)] * 2 + [str(gif)] * 2
    for record in records:
        assert set(record) == {"video", "label", "score", "strip", "gif"}
        strip = Image.open(out / record["strip"])
        assert strip.format == "PNG" and strip.width > NUM_FRAMES * FRAME_SIZE
        animation = Image.open(out / record["gif"])
        assert animation.format == "GIF" and animation.n_frames == NUM_FRAMES and animation.size == (32, 32)
        assert animation.info["duration"] == 200
    expected = pipeline("legrad-explanation", model=videomae.path)(str(folder), top_k=2)
    assert [r["label"] for r in records[:2]] == [e["label"] for e in expected]
    assert [r["score"] for r in records[:2]] == pytest.approx([e["score"] for e in expected], abs=1e-6)


def test_video_is_optional_for_a_video_model(videomae, clips, tmp_path, capsys):
    folder, gif = clips
    for flags, out in (([], tmp_path / "plain"), (["--video"], tmp_path / "flagged")):
        code, stdout, stderr = run(["explain", folder, gif, *flags, "--model", videomae.path, "--out", out], capsys)
        assert code == 0, stderr
        assert "wrote maps for 2 video clip(s)" in stdout
    plain, flagged = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("plain", "flagged"))
    assert plain == flagged


def test_explain_audio_files_writes_figures_and_relevance_over_time(ast, wav_files, tmp_path, capsys):
    out = tmp_path / "out"
    folder = wav_files[0].parent
    code, stdout, stderr = run(["explain", folder, "--model", ast.path, "--top-k", "2", "--out", out], capsys)
    assert code == 0, stderr
    assert "wrote maps for 2 audio clip(s)" in stdout
    records = json.loads((out / "results.json").read_text())
    assert [record["audio"] for record in records] == [str(path) for path in wav_files for _ in range(2)]
    expected = pipeline("legrad-explanation", model=ast.path)(str(wav_files[1]), top_k=2)
    for record, entry in zip(records[2:], expected, strict=True):
        assert set(record) == {"audio", "label", "score", "figure", "times", "relevance_over_time"}
        assert record["label"] == entry["label"] and record["score"] == pytest.approx(entry["score"], abs=1e-6)
        np.testing.assert_allclose(record["relevance_over_time"], entry["relevance_over_time"], atol=1e-5)
        assert record["times"] == entry["times"] and len(record["times"]) == len(record["relevance_over_time"])
        assert len(record["times"]) == 80  # the clip's own frames, not the feature extractor's padding
        figure = Image.open(out / record["figure"])
        assert figure.format == "PNG" and figure.size == entry["overlay"].size


def test_an_unreadable_clip_is_reported_and_skipped(ast, wav_files, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not really")
    code, _, stderr = run(["explain", wav_files[0], broken, "--model", ast.path, "--out", tmp_path / "out"], capsys)
    assert code == 1 and "broken.wav: unreadable audio" in stderr
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 1


def test_a_clip_shorter_than_the_model_takes_is_reported_and_skipped(videomae, clips, tmp_path, capsys):
    folder, gif = clips
    short = tmp_path / "short.gif"
    frames = random_clip(2, NUM_FRAMES - 1, (FRAME_SIZE, FRAME_SIZE))
    frames[0].save(short, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "out"
    code, stdout, stderr = run(
        ["explain", folder, short, gif, "--video", "--model", videomae.path, "--out", out], capsys
    )
    assert code == 1, stderr
    assert f"short.gif: {NUM_FRAMES - 1} frame(s), but VideoMAEForVideoClassification takes {NUM_FRAMES}" in stderr
    assert "wrote maps for 2 video clip(s)" in stdout and "1 failed" in stdout
    records = json.loads((out / "results.json").read_text())
    assert [record["video"] for record in records] == [str(folder), str(gif)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{folder}", "--video", "--model", "{vit}"], "--video is for video classifiers; {vit} is an image model"),
        (["{wav}", "--model", "{vit}"], "clip0.wav is an audio file, but {vit} is an image model"),
        (["{image}", "--model", "{ast}"], "{ast} is an audio model: give audio files"),
        (["{folder}", "--video", "--model", "{ast}"], "{ast} is an audio model: give audio files, not --video"),
        (["{folder}", "--video", "--model", "{videomae}", "--prompt", "a cat"], "is a video classifier: use --top-k"),
        (["{wav}", "--model", "{ast}", "--image-size", "64"], "--image-size is for image models"),
        (["{wav}", "--model", "{ast}", "--threshold", "0.5"], "--threshold is for detectors (OWL-ViT, OWLv2)"),
        (["{folder}", "--video", "--model", "{videomae}", "--threshold", "0.5"], "--threshold is for detectors"),
        (["--dataset", "{folder}", "--model", "{videomae}"], "--dataset explains images; {videomae} is a video model"),
    ],
)
def test_mismatched_inputs_and_models_are_clear_errors(
    argv, message, vit, videomae, ast, clips, wav_files, tmp_path, capsys
):
    image = tmp_path / "photo.png"
    random_image(0, (40, 40)).save(image)
    names = {
        "folder": clips[0],
        "wav": wav_files[0],
        "image": image,
        "vit": vit.path,
        "ast": ast.path,
        "videomae": videomae.path,
    }
    code, _, stderr = run(["explain", *(a.format(**names) for a in argv), "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert message.format(**names) in stderr


def test_audio_without_soundfile_names_the_extra(ast, wav_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "soundfile", None)  # `import soundfile` now raises ImportError
    code, _, stderr = run(["explain", wav_files[0], "--model", ast.path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "transformers-legrad[audio]" in stderr
