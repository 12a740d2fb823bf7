"""The `legrad-explanation` pipeline with video and audio classifiers: each input form, the results equal to
`LeGradExplainer.explain` on the same inputs, sorting, `top_k`, batches and streaming, and the errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile
import torch
from datasets import Dataset
from PIL import Image
from transformers import pipeline
from transformers.pipelines.pt_utils import KeyDataset

import transformers_legrad  # noqa: F401  (registers the task)
from transformers_legrad import LeGradExplainer, media, visualize_media

from tiny_audio import FRAMES, SAMPLING_RATE, make_ast, samples_for_frames, tone_burst
from tiny_video import FRAME_SIZE, NUM_FRAMES, make_videomae, make_vivit, random_clip

ATOL = 1e-5


@pytest.fixture(scope="module")
def videomae():
    return make_videomae()


@pytest.fixture(scope="module")
def ast():
    return make_ast()


@pytest.fixture(scope="module")
def video_pipe(videomae):
    return pipeline("legrad-explanation", model=videomae.path)


@pytest.fixture(scope="module")
def audio_pipe(ast):
    return pipeline("legrad-explanation", model=ast.path)


def square_clip(seed: int, frames: int = NUM_FRAMES) -> list[Image.Image]:
    """Frames of exactly the processed size, so the maps on the original frames are the explainer's heatmaps."""
    return random_clip(seed, frames, (FRAME_SIZE, FRAME_SIZE))


def write_frames(folder, frames) -> str:
    folder.mkdir()
    for index, frame in enumerate(frames):
        frame.save(folder / f"frame{index}.png")  # natural order: frame10 after frame9
    return str(folder)


def clip_wave(seed: int, frames: int = 60) -> np.ndarray:
    return tone_burst(samples_for_frames(frames), start=0.2, duration=0.1, seed=seed)


def count_explain_calls(pipe, monkeypatch) -> list[int]:
    calls = []
    explain = pipe.explainer.explain

    def counted(*args, **kwargs):
        given = kwargs.get("pixel_values")
        calls.append(given.shape[0] if given is not None else len(kwargs["audio"]))
        return explain(*args, **kwargs)

    monkeypatch.setattr(pipe.explainer, "explain", counted)
    return calls


def assert_same_results(actual, expected):
    assert len(actual) == len(expected)
    for clip_results, clip_expected in zip(actual, expected, strict=True):
        assert [entry["label"] for entry in clip_results] == [entry["label"] for entry in clip_expected]
        for a, b in zip(clip_results, clip_expected, strict=True):
            assert abs(a["score"] - b["score"]) < 1e-5
            torch.testing.assert_close(a["map"], b["map"], rtol=1e-4, atol=ATOL)


# --- video -------------------------------------------------------------------------------------------------------
def test_video_results_are_the_explainers_maps_sorted_by_score(video_pipe, videomae):
    frames = square_clip(1)
    results = video_pipe(frames, top_k=3, return_tensors=True)
    out = LeGradExplainer(videomae.model, videomae.processor).explain(videos=frames, top_k=3)
    assert [entry["label"] for entry in results] == out.labels_for(0)
    scores = [entry["score"] for entry in results]
    assert scores == sorted(scores, reverse=True)
    torch.testing.assert_close(torch.tensor(scores), out.probabilities[0])
    for k, entry in enumerate(results):
        assert set(entry) == {"label", "score", "frames", "strip", "map"}
        assert entry["map"].shape == (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
        torch.testing.assert_close(entry["map"], out.heatmaps[0, k], rtol=0, atol=ATOL)
        assert len(entry["frames"]) == NUM_FRAMES and all(f.size == (FRAME_SIZE,) * 2 for f in entry["frames"])
        assert entry["strip"].mode == "RGB" and entry["strip"].width > NUM_FRAMES * FRAME_SIZE
    assert "map" not in video_pipe(frames)[0] and len(video_pipe(frames)) == 1  # top-1 by default
    least_likely_first = out.labels_for(0)[::-1]
    assert [entry["label"] for entry in video_pipe(frames, targets=least_likely_first)] == out.labels_for(0)


def test_video_targets_and_the_maps_on_larger_frames(video_pipe, videomae):
    frames = random_clip(2, NUM_FRAMES, (48, 32))  # the 32 x 32 center crop: columns 8..39
    results = video_pipe(frames, targets=["dog", 0], return_tensors=True)
    assert sorted(entry["label"] for entry in results) == sorted(["dog", videomae.model.config.id2label[0]])
    for entry in results:
        assert entry["map"].shape == (NUM_FRAMES, 32, 48)
        assert all(frame.size == (48, 32) for frame in entry["frames"])
        assert entry["map"][:, :, :8].abs().max() == 0 and entry["map"][:, :, 40:].abs().max() == 0  # cropped away
        assert entry["map"][:, :, 8:40].amax() > 0.9


def test_every_video_form_gives_the_maps_of_its_frames(video_pipe, videomae, tmp_path):
    frames = square_clip(3, frames=7)
    taken = media.sample_frames(frames, NUM_FRAMES)  # frames 0, 1, 3, 5
    explainer = LeGradExplainer(videomae.model, videomae.processor)
    expected = explainer.explain(videos=taken, top_k=2).heatmaps[0]
    arrays = np.stack([np.asarray(frame) for frame in frames])
    forms = {
        "frames": frames,
        "arrays": list(arrays),
        "array": arrays,
        "folder": write_frames(tmp_path / "frames", frames),
    }
    for name, video in forms.items():
        results = video_pipe(video, top_k=2, return_tensors=True)
        maps = torch.stack([entry["map"] for entry in sorted(results, key=lambda e: -e["score"])])
        torch.testing.assert_close(maps, expected, rtol=0, atol=ATOL, msg=name)
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    gif_frames = media.sample_frames(media.load_video(gif), NUM_FRAMES)  # the GIF's own (quantized) colours
    results = video_pipe(str(gif), top_k=2, return_tensors=True)
    torch.testing.assert_close(
        torch.stack([entry["map"] for entry in results]),
        explainer.explain(videos=gif_frames, top_k=2).heatmaps[0],
        rtol=0,
        atol=ATOL,
    )


def test_frame_sampling_rate_follows_transformers(video_pipe, videomae):
    frames = square_clip(4, frames=9)
    # transformers' video-classification: np.linspace(0, num_frames * rate - 1, num_frames) -> 0, 2, 4, 7
    taken = [frames[i] for i in (0, 2, 4, 7)]
    expected = LeGradExplainer(videomae.model, videomae.processor).explain(videos=taken).heatmaps[0, 0]
    result = video_pipe(frames, frame_sampling_rate=2, return_tensors=True)[0]
    torch.testing.assert_close(result["map"], expected, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="need 12 frames, but the clip has 9"):
        video_pipe(frames, frame_sampling_rate=3)
    with pytest.raises(ValueError, match="takes 4 frames per video"):
        video_pipe(frames, num_frames=8)
    with pytest.raises(ValueError, match="clip has 3"):
        video_pipe(frames[:3])


def test_video_batches_and_streams_give_the_maps_of_single_clips(video_pipe, monkeypatch, tmp_path):
    clips = [square_clip(10 + i, frames=4 + i) for i in range(3)]
    one_by_one = video_pipe(clips, top_k=2, return_tensors=True)
    calls = count_explain_calls(video_pipe, monkeypatch)
    batched = video_pipe(clips, top_k=2, batch_size=2, return_tensors=True)
    assert calls == [2, 1]
    assert_same_results(batched, one_by_one)
    folders = [write_frames(tmp_path / f"clip{i}", clip) for i, clip in enumerate(clips)]
    stream = video_pipe(KeyDataset(Dataset.from_dict({"video": folders}), "video"), top_k=2, batch_size=2)
    assert isinstance(stream, Iterator)
    streamed = [[{**entry, "map": None} for entry in results] for results in stream]
    assert calls == [2, 1, 2, 1]
    assert [[e["label"] for e in r] for r in streamed] == [[e["label"] for e in r] for r in one_by_one]


def test_vivit_through_the_pipeline(tmp_path):
    vivit = make_vivit()
    pipe = pipeline("legrad-explanation", model=vivit.path)
    frames = square_clip(5)
    result = pipe(frames, return_tensors=True)[0]
    expected = LeGradExplainer(vivit.model, vivit.processor).explain(videos=frames).heatmaps[0, 0]
    torch.testing.assert_close(result["map"], expected, rtol=0, atol=ATOL)


def test_the_pipeline_reads_a_list_as_the_explainer_does(video_pipe, videomae, tmp_path):
    """Still image paths are one clip's frames, GIF paths are clips: the rule of `videos.is_one_clip` in both."""
    explainer = LeGradExplainer(videomae.model, videomae.processor)
    stills, gifs = [], []
    for index, frame in enumerate(square_clip(7)):
        stills.append(str(tmp_path / f"f{index}.png"))
        frame.save(stills[-1])
    for index in range(2):
        clip = square_clip(8 + index)
        gifs.append(str(tmp_path / f"c{index}.gif"))
        clip[0].save(gifs[-1], save_all=True, append_images=clip[1:], duration=100, loop=0)
    one = video_pipe(stills, top_k=1, return_tensors=True)
    assert isinstance(one[0], dict)
    expected = explainer.explain(videos=stills, top_k=1)
    torch.testing.assert_close(one[0]["map"], expected.heatmaps[0, 0], atol=ATOL, rtol=0)
    several = video_pipe(gifs, top_k=1, return_tensors=True)
    assert len(several) == 2 and all(isinstance(results, list) for results in several)
    expected = explainer.explain(videos=gifs, top_k=1)
    for index, results in enumerate(several):
        torch.testing.assert_close(results[0]["map"], expected.heatmaps[index, 0], atol=ATOL, rtol=0)
    with pytest.raises(TypeError, match="not a mix"):
        video_pipe([gifs[0], *stills[:3]])


def test_an_option_of_another_family_names_the_familys_options(videomae, tmp_path, capsys):
    from transformers_legrad.cli import main

    with pytest.raises(TypeError, match=r"not options of VideoMAEForVideoClassification's family .* are: none"):
        pipeline("legrad-explanation", model=videomae.path, attention="temporal")
    out = tmp_path / "out"
    code = main(
        ["explain", str(tmp_path), "--video", "--model", videomae.path, "--option", "attention=temporal"]
        + ["--out", str(out)]
    )
    assert code == 2 and "attention; they are not options of" in capsys.readouterr().err


def test_video_errors(video_pipe, tmp_path):
    frames = square_clip(6)
    with pytest.raises(ValueError, match="is a video classifier: use top_k"):
        video_pipe(frames, candidate_labels=["a cat"])
    with pytest.raises(ValueError, match="`directions` is not for video classifiers"):
        video_pipe(frames, directions=torch.ones(1, 32))
    with pytest.raises(ValueError, match="`image_size` is for image models"):
        video_pipe(frames, image_size=64)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(media.VideoReadError, match="encoded video files are not decoded here"):
        video_pipe(str(tmp_path / "clip.mp4"))


# --- audio -------------------------------------------------------------------------------------------------------
def test_audio_results_are_the_explainers_maps_and_curves(audio_pipe, ast):
    wave = clip_wave(0)
    results = audio_pipe(wave, top_k=3, return_tensors=True)
    out = LeGradExplainer(ast.model, ast.processor).explain(audio=wave, sampling_rate=SAMPLING_RATE, top_k=3)
    assert [entry["label"] for entry in results] == out.labels_for(0)
    scores = [entry["score"] for entry in results]
    assert scores == sorted(scores, reverse=True)
    torch.testing.assert_close(torch.tensor(scores), out.probabilities[0])
    curves = out.relevance_over_time()
    frames = out.clip_frames[0]  # the clip's own frames; the extractor pads it to the model's FRAMES
    assert frames == 60 < FRAMES
    for k, entry in enumerate(results):
        assert set(entry) == {"label", "score", "overlay", "relevance_over_time", "times", "map"}
        torch.testing.assert_close(entry["map"], out.heatmaps[0, k, :, :frames], rtol=0, atol=ATOL)
        np.testing.assert_allclose(entry["relevance_over_time"], curves[0, k, :frames].numpy(), atol=ATOL)
        np.testing.assert_allclose(entry["times"], out.frame_times[:frames].numpy(), atol=1e-7)
        assert isinstance(entry["relevance_over_time"][0], float) and entry["overlay"].mode == "RGB"
    spectrogram = ast.processor(wave, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"][0, :frames].T
    figure = visualize_media.spectrogram_figure(
        spectrogram,
        results[0]["map"],
        relevance_over_time=torch.tensor(results[0]["relevance_over_time"]),
        label=results[0]["label"],
        score=results[0]["score"],
        seconds_per_frame=0.01,
    )
    assert np.array_equal(np.asarray(results[0]["overlay"]), np.asarray(figure))  # the padding is not drawn
    assert entry["times"][1] - entry["times"][0] == pytest.approx(0.01)
    least_likely_first = out.labels_for(0)[::-1]
    assert [entry["label"] for entry in audio_pipe(wave, targets=least_likely_first)] == out.labels_for(0)


def test_every_audio_form_gives_the_maps_of_its_waveform(audio_pipe, ast, tmp_path):
    wave = clip_wave(1)
    expected = audio_pipe(wave, top_k=2, return_tensors=True)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave, SAMPLING_RATE, subtype="FLOAT")
    for name, audio in {
        "file": str(path),
        "raw": {"raw": wave, "sampling_rate": SAMPLING_RATE},
        "array": {"array": wave, "sampling_rate": SAMPLING_RATE},
        "tensor": torch.from_numpy(wave),
    }.items():
        assert_same_results([audio_pipe(audio, top_k=2, return_tensors=True)], [expected]), name
    # Another rate is resampled to the feature extractor's, as transformers' audio pipeline does.
    slow = wave[::2].copy()
    resampled, _ = media.load_audio(slow, sampling_rate=8000, target_rate=SAMPLING_RATE)
    out = LeGradExplainer(ast.model, ast.processor).explain(audio=resampled, sampling_rate=SAMPLING_RATE)
    result = audio_pipe({"raw": slow, "sampling_rate": 8000}, return_tensors=True)[0]
    torch.testing.assert_close(result["map"], out.heatmaps[0, 0, :, : out.clip_frames[0]], rtol=0, atol=ATOL)


def test_audio_batches_and_streams_give_the_maps_of_single_clips(audio_pipe, monkeypatch, tmp_path):
    waves = [clip_wave(10 + i, frames=40 + 20 * i) for i in range(3)]
    one_by_one = audio_pipe(waves, top_k=2, return_tensors=True)
    calls = count_explain_calls(audio_pipe, monkeypatch)
    batched = audio_pipe(waves, top_k=2, batch_size=2, return_tensors=True)
    assert calls == [2, 1]
    assert_same_results(batched, one_by_one)
    paths = []
    for index, wave in enumerate(waves):
        paths.append(str(tmp_path / f"clip{index}.wav"))
        soundfile.write(paths[-1], wave, SAMPLING_RATE, subtype="FLOAT")
    stream = audio_pipe(KeyDataset(Dataset.from_dict({"audio": paths}), "audio"), top_k=2, batch_size=2)
    assert isinstance(stream, Iterator)
    streamed = list(stream)
    assert calls == [2, 1, 2, 1]
    for results, expected in zip(streamed, one_by_one, strict=True):
        assert [e["label"] for e in results] == [e["label"] for e in expected]
        np.testing.assert_allclose(
            results[0]["relevance_over_time"], expected[0]["relevance_over_time"], rtol=1e-4, atol=ATOL
        )


def test_the_audio_pipeline_loads_the_feature_extractor(audio_pipe, ast, tmp_path):
    assert type(audio_pipe.feature_extractor).__name__ == "ASTFeatureExtractor"
    assert audio_pipe.image_processor is None
    bare = tmp_path / "no-extractor"
    shutil.copytree(ast.path, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="no feature extractor was found for ASTForAudioClassification"):
        pipeline("legrad-explanation", model=str(bare))


def test_an_image_or_video_model_without_its_image_processor_is_a_clear_error(videomae, vit, tmp_path):
    for tiny, name in ((videomae, "VideoMAEForVideoClassification"), (vit, "ViTForImageClassification")):
        bare = tmp_path / name
        shutil.copytree(tiny.path, bare)
        (bare / "preprocessor_config.json").unlink()
        with pytest.raises(ValueError, match=f"no image processor was found for {name}.*`image_processor=`"):
            pipeline("legrad-explanation", model=str(bare))


def test_audio_errors(audio_pipe, tmp_path):
    wave = clip_wave(2)
    with pytest.raises(ValueError, match="is an audio classifier: use top_k"):
        audio_pipe(wave, candidate_labels=["a cat"])
    with pytest.raises(ValueError, match='must hold "raw"'):
        audio_pipe({"waveform": wave, "sampling_rate": SAMPLING_RATE})
    with pytest.raises(ValueError, match="`num_frames` and `frame_sampling_rate` are for video models"):
        audio_pipe(wave, num_frames=4)
    with pytest.raises(media.AudioReadError, match="no such file"):
        audio_pipe(str(tmp_path / "missing.wav"))
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    with pytest.raises(media.AudioReadError, match="unreadable audio"):
        audio_pipe(str(tmp_path / "noise.wav"))


# --- export ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, model_id, processor_file",
    [
        ("audio", "MIT/ast-finetuned-audioset-10-10-0.4593", "preprocessor_config.json"),
        ("video", "MCG-NJU/videomae-base-finetuned-kinetics", "preprocessor_config.json"),
    ],
)
def test_an_exported_folder_reloads_with_its_preprocessor(name, model_id, processor_file, request, tmp_path):
    import json

    from transformers_legrad.export import CUSTOM_TASK, export_pipeline

    pipe = request.getfixturevalue(f"{name}_pipe")
    given = clip_wave(3) if name == "audio" else square_clip(7)
    out = export_pipeline(pipe, tmp_path / "exported", model_id=model_id)
    assert (out / processor_file).is_file() and (out / "model.safetensors").is_file()
    custom = json.loads((out / "config.json").read_text())["custom_pipelines"][CUSTOM_TASK]
    assert custom["type"] == name and custom["pt"] == [type(pipe.model).__name__]
    expected = pipe(given, top_k=2, return_tensors=True)
    for reloaded in (
        pipeline("legrad-explanation", model=str(out)),
        pipeline(model=str(out), trust_remote_code=True),  # the Hub's way: the folder's pipeline module
    ):
        assert type(reloaded.feature_extractor if name == "audio" else reloaded.image_processor) is type(
            pipe.feature_extractor if name == "audio" else pipe.image_processor
        )
        assert_same_results([reloaded(given, top_k=2, return_tensors=True)], [expected])
