"""`ASTForAudioClassification`: LeGrad on the (frequency, time) patch grid of a spectrogram.

Raw `grid_maps` and `layer_maps` against the independent reference in `reference_audio.py` (eager attention, full
graph, one autograd.grad per layer and target) for the default, all and an arbitrary set of layers, 1 and 3
targets, a batch of clips of different lengths and `score="model"`; waveforms and `input_values` give the same
maps; the heatmaps' orientation ([mel bins, time frames]), frame times and relevance over time; clips shorter than
the model's frames (padded) and longer (truncated, with a warning); bfloat16 maps close to float32; the model left
as found; bad inputs refused with errors that say what to do. A known answer: a tone burst at a random time in
noise, explained by a constructed tone detector, peaks inside the burst (the rate is asserted well above chance).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor

from transformers_legrad import LeGradExplainer, maps
from transformers_legrad.adapters import adapter_for
from transformers_legrad.adapters import audio as audio_adapter
from transformers_legrad.adapters.audio import ASTAdapter

import tiny_audio
import tiny_models
from reference_audio import reference_layer_maps
from test_engine import assert_same_state, model_state
from test_exact import assert_raw_maps_match, pearson, placed_at_patch_centres
from tiny_audio import FRAMES, MEL_BINS, NUM_LAYERS, SAMPLING_RATE, samples_for_frames

LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "arbitrary": ([0, 2], [0, 2]),
}
#: (frequency patches, time patches): (32 - 16) // 10 + 1 and (96 - 16) // 10 + 1.
GRID = (2, 9)
#: (stride, patch) along mel bins and time frames: AST's 16 x 16 patches every 10.
GEOMETRY = ((10, 16), (10, 16))
#: One clip of exactly the model's frames, one shorter (padded by the extractor to 96 frames).
CLIP_FRAMES = (FRAMES, 61)


@pytest.fixture(scope="module")
def ast():
    return tiny_audio.make_ast()


def clips(frames=CLIP_FRAMES, seed: int = 0) -> list[np.ndarray]:
    return [tiny_audio.noise(samples_for_frames(n), seed + i, level=0.2 + 0.1 * i) for i, n in enumerate(frames)]


def features(tiny, waves) -> torch.Tensor:
    return tiny.processor(waves, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]


def test_registry_gives_the_audio_adapter(ast):
    adapter = adapter_for(ast.model)
    assert isinstance(adapter, ASTAdapter)
    assert adapter.spec.modality == "audio" and adapter.num_prefix_tokens == 2
    assert adapter.grid_shape == GRID and adapter.spectrogram_shape == (FRAMES, MEL_BINS)


@pytest.mark.parametrize("score", ["legrad", "model"])
@pytest.mark.parametrize("layer_case", list(LAYER_CASES))
@pytest.mark.parametrize("num_targets", [1, 3])
def test_maps_match_reference(ast, score, layer_case, num_targets):
    layers, indices = LAYER_CASES[layer_case]
    waves = clips()
    targets = [4, 0, 2][:num_targets]
    out = LeGradExplainer(ast.model, ast.processor, layers=layers, score=score).explain(
        audio=waves, sampling_rate=SAMPLING_RATE, targets=targets, return_layer_maps=True
    )
    pooling = "mean" if score == "legrad" else "model"
    ids = torch.tensor([targets] * len(waves))
    reference = reference_layer_maps(ast.model, features(ast, waves), ids, indices, pooling)
    assert out.explained_layers == indices
    assert out.grid_maps.shape == (len(waves), num_targets, *GRID)
    assert_raw_maps_match(out.layer_maps, reference)
    assert_raw_maps_match(out.grid_maps, reference.sum(dim=2))
    torch.testing.assert_close(out.target_ids, ids)


def test_default_target_is_the_top_class_and_scores_are_the_logits(ast):
    waves = clips()
    out = LeGradExplainer(ast.model, ast.processor).explain(audio=waves, sampling_rate=SAMPLING_RATE)
    with torch.no_grad():
        logits = ast.model(input_values=features(ast, waves)).logits
    torch.testing.assert_close(out.target_ids[:, 0], logits.argmax(-1))
    torch.testing.assert_close(out.scores[:, 0], logits.gather(1, logits.argmax(-1, keepdim=True))[:, 0])


@pytest.mark.parametrize("problem_type", [None, "multi_label_classification", "regression"])
def test_probabilities_follow_the_audio_classification_pipeline(problem_type):
    """Softmax over the classes, each class's sigmoid for a multi-label checkpoint (AudioSet's), the logits for
    regression: the `function_to_apply` rule of transformers' audio-classification pipeline."""
    from transformers import pipeline

    tiny = tiny_audio.make_ast(problem_type=problem_type)
    wave = tiny_audio.tone_burst(samples_for_frames(70), start=0.1, duration=0.1, seed=3)
    out = LeGradExplainer(tiny.model, tiny.processor).explain(audio=wave, sampling_rate=SAMPLING_RATE, top_k=3)
    theirs = pipeline("audio-classification", model=tiny.path)(wave, top_k=3)
    assert out.labels_for(0) == [result["label"] for result in theirs]
    torch.testing.assert_close(out.probabilities[0], torch.tensor([result["score"] for result in theirs]))
    if problem_type == "multi_label_classification":
        torch.testing.assert_close(out.probabilities, out.scores.sigmoid())
    elif problem_type == "regression":
        torch.testing.assert_close(out.probabilities, out.scores)


def test_input_values_give_the_waveforms_maps(ast):
    waves = clips()
    explainer = LeGradExplainer(ast.model, ast.processor)
    from_audio = explainer.explain(audio=waves, sampling_rate=SAMPLING_RATE, targets=[1, 3])
    from_features = LeGradExplainer(ast.model).explain(input_values=features(ast, waves), targets=[1, 3])
    torch.testing.assert_close(from_audio.grid_maps, from_features.grid_maps, rtol=0, atol=0)
    torch.testing.assert_close(from_audio.heatmaps, from_features.heatmaps, rtol=0, atol=0)
    assert from_audio.clip_frames == list(CLIP_FRAMES) and from_features.clip_frames is None
    torch.testing.assert_close(from_audio.frame_times, from_features.frame_times)


def test_one_waveform_as_array_list_or_tensor(ast):
    wave = clips()[0]
    explainer = LeGradExplainer(ast.model, ast.processor)
    expected = explainer.explain(audio=wave, sampling_rate=SAMPLING_RATE, targets=[2]).grid_maps
    assert expected.shape == (1, 1, *GRID)
    for given in (wave.tolist(), torch.from_numpy(wave), [wave]):
        got = explainer.explain(audio=given, sampling_rate=SAMPLING_RATE, targets=[2]).grid_maps
        torch.testing.assert_close(got, expected)


def test_heatmaps_are_mel_by_frames_with_times_in_seconds(ast):
    out = LeGradExplainer(ast.model, ast.processor).explain(audio=clips(), sampling_rate=SAMPLING_RATE, targets=[0])
    assert out.heatmaps.shape == (2, 1, MEL_BINS, FRAMES)
    assert out.grid_shapes == [GRID, GRID] and out.image_sizes == [(MEL_BINS, FRAMES)] * 2
    # Not stretched bilinearly: patch (f, t) is placed at its centre (10 f + 7.5, 10 t + 7.5), in between linear.
    torch.testing.assert_close(out.heatmaps, placed_at_patch_centres(out.grid_maps, (MEL_BINS, FRAMES), GEOMETRY))
    curve = out.relevance_over_time()
    assert curve.shape == (2, 1, FRAMES)
    torch.testing.assert_close(curve, out.heatmaps.mean(dim=2))
    assert torch.isfinite(out.heatmaps).all() and curve.min() >= 0 and curve.max() <= 1


@pytest.mark.parametrize(("row", "column"), [(0, 1), (1, 4), (0, 7)])
def test_a_patchs_heatmap_peaks_at_the_patch_centre(ast, row, column):
    """A one-hot grid map is 1 at its patch's centre (bins 10 f + 7.5, frames 10 t + 7.5: the two middle positions
    of each 16-wide patch), falls linearly to 0 at the neighbouring centres and is held constant beyond the first
    and last centre. A bilinear stretch of the 9 time patches over 96 frames would put patch t at (t + 0.5) 96 / 9."""
    grid = torch.zeros(1, 1, *GRID)
    grid[0, 0, row, column] = 1
    geometry = adapter_for(ast.model).patch_geometry
    assert geometry == GEOMETRY
    heatmap = maps.heatmaps_from_grids(grid, [GRID], [(MEL_BINS, FRAMES)], geometry)[0, 0].double()
    frames = np.arange(FRAMES)
    over_time = np.maximum(0, 1 - np.abs(frames - (10 * column + 7.5)) / 10)
    bins = np.clip(np.arange(MEL_BINS), 7.5, 17.5)  # 2 frequency patches: centres 7.5 and 17.5, held beyond
    over_frequency = (17.5 - bins) / 10 if row == 0 else (bins - 7.5) / 10
    expected = np.outer(over_frequency, over_time)
    torch.testing.assert_close(heatmap, torch.from_numpy(expected / expected.max()), rtol=0, atol=1e-6)
    assert set(heatmap.amax(dim=0).eq(heatmap.max()).nonzero().flatten().tolist()) == {
        10 * column + 7,
        10 * column + 8,
    }


def test_frame_times_and_clip_frames_are_the_feature_extractors(ast):
    """An impulse at sample s lights up exactly the spectrogram frames whose window (`frame_times[k]` +- half a
    window, the window being 2 * `frame_times[0]`) holds s, at the model's 16 kHz and at 8 kHz (the extractor's
    numpy path keeps 160 / 400 samples); `clip_frames` is the number of frames before the extractor's padding."""
    for rate in (SAMPLING_RATE, 8000):
        extractor = ASTFeatureExtractor(num_mel_bins=MEL_BINS, max_length=FRAMES, sampling_rate=rate)
        samples, impulse = 61 * 160 + 400 - 7, 3 * 160 + 250
        wave = np.zeros(samples, np.float32)
        wave[impulse] = 0.9
        out = LeGradExplainer(ast.model, extractor).explain(audio=wave, sampling_rate=rate, targets=[0])
        values = extractor(wave, sampling_rate=rate, return_tensors="np")["input_values"][0]  # [frames, mel]
        padding = np.isclose(values, extractor.normalize(np.float32(0.0))).all(axis=1)
        silent = np.isclose(values, extractor(np.zeros_like(wave), sampling_rate=rate)["input_values"][0]).all(1)
        assert out.clip_frames == [int((~padding).sum())] and padding[out.clip_frames[0] :].all()
        lit = set(np.flatnonzero(~padding & ~silent).tolist())
        times, half_window = out.frame_times.double().numpy(), float(out.frame_times[0])
        expected = set(np.flatnonzero((times - half_window <= impulse / rate) & (impulse / rate < times + half_window)))
        assert lit == expected and len(lit) >= 2, (rate, lit, expected)


def test_with_torchaudio_the_frames_are_kaldis_10_and_25_ms(monkeypatch):
    """ASTFeatureExtractor's torchaudio path is Kaldi's fbank: `int(rate * 10 ms)` hop, `int(rate * 25 ms)` window
    (torchaudio.compliance.kaldi's arithmetic), not the numpy path's 160 / 400 samples."""
    extractor = ASTFeatureExtractor(num_mel_bins=MEL_BINS, sampling_rate=22050)
    monkeypatch.setattr(audio_adapter, "is_speech_available", lambda: False)
    assert audio_adapter._frame_samples(extractor, 22050) == (160, 400)
    monkeypatch.setattr(audio_adapter, "is_speech_available", lambda: True)
    assert audio_adapter._frame_samples(extractor, 22050) == (220, 551)
    assert audio_adapter._frame_samples(extractor, 16000) == (160, 400)
    assert audio_adapter._frame_samples(extractor, 8000) == (80, 200)


def test_grid_is_frequency_major(ast):
    """Rows of the grid are frequency patches: a map's rows differ where the input's frequency bands do."""
    adapter = adapter_for(ast.model)
    relevance = torch.arange(2 + GRID[0] * GRID[1], dtype=torch.float32).view(1, 1, 1, -1)
    grid = maps.tokens_to_grids(relevance, adapter.num_prefix_tokens, [adapter.grid_shape])[0, 0, 0]
    # Token 2 + f * 9 + t is the patch at frequency f, time t (the patch convolution's [frequency, time] output).
    assert grid[1, 0] == 2 + 9 and grid[0, 8] == 2 + 8


def test_short_clip_is_padded_and_long_clip_truncated(ast):
    explainer = LeGradExplainer(ast.model, ast.processor)
    long_wave = tiny_audio.noise(samples_for_frames(FRAMES + 40), seed=3, level=0.3)
    with pytest.warns(UserWarning, match="longer than the model's 96 frames"):
        long_out = explainer.explain(audio=long_wave, sampling_rate=SAMPLING_RATE, targets=[1])
    head = long_wave[: samples_for_frames(FRAMES)]
    head_out = explainer.explain(audio=head, sampling_rate=SAMPLING_RATE, targets=[1])
    torch.testing.assert_close(long_out.grid_maps, head_out.grid_maps)  # the first 96 frames are explained
    assert long_out.clip_frames == [FRAMES]
    short = explainer.explain(audio=clips((20,)), sampling_rate=SAMPLING_RATE, targets=[1])
    assert short.clip_frames == [20] and short.heatmaps.shape[-1] == FRAMES
    padded = features(ast, clips((20,)))[0, 20:]
    assert torch.all(padded == padded[0, 0])  # the padding the model sees (and the map covers) is one constant


def test_bfloat16_maps_correlate_with_float32(ast):
    waves = clips()
    full = LeGradExplainer(ast.model, ast.processor).explain(audio=waves, sampling_rate=SAMPLING_RATE, targets=[0, 3])
    half_model = copy.deepcopy(ast.model).to(torch.bfloat16)
    half = LeGradExplainer(half_model, ast.processor).explain(audio=waves, sampling_rate=SAMPLING_RATE, targets=[0, 3])
    assert torch.isfinite(half.grid_maps).all() and (half.grid_maps.flatten(2).amax(-1) > 0).all()
    assert (pearson(full.grid_maps, half.grid_maps) >= 0.99).all()
    assert next(half_model.parameters()).dtype == torch.bfloat16


def test_model_left_as_found(ast):
    before = model_state(ast.model)
    LeGradExplainer(ast.model, ast.processor, layers="all").explain(audio=clips(), sampling_rate=SAMPLING_RATE)
    assert_same_state(before, model_state(ast.model))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"audio": np.zeros((2, 16000), np.float32)}, ValueError, r"shape \(2, 16000\), not a 1-D \(mono\)"),
        ({"audio": np.zeros(16000, np.float32), "sampling_rate": 44100}, ValueError, "expects 16000 Hz; resample"),
        ({"audio": np.zeros(16000, np.float32), "sampling_rate": None}, ValueError, "needs its `sampling_rate=`"),
        ({"audio": np.zeros(100, np.float32)}, ValueError, "fewer than one 400-sample frame"),
        ({"audio": np.full(16000, np.nan, np.float32)}, ValueError, "NaN or inf"),
        ({"audio": [np.zeros(16000, np.float32), "clip.wav"]}, TypeError, "not a waveform"),
        (
            {"audio": np.zeros(16000, np.float32), "input_values": torch.zeros(1, FRAMES, MEL_BINS)},
            ValueError,
            "not both",
        ),
        ({"input_values": torch.zeros(1, MEL_BINS, FRAMES), "sampling_rate": None}, ValueError, r"fixed to \(96, 32\)"),
        ({"input_values": torch.zeros(FRAMES, MEL_BINS), "sampling_rate": None}, ValueError, r"\.unsqueeze\(0\)"),
        ({"input_values": torch.zeros(1, FRAMES, MEL_BINS)}, ValueError, "`sampling_rate` goes with raw `audio`"),
        ({"images": tiny_models.random_image(0)}, ValueError, "classifies audio, not images"),
        (
            {"pixel_values": torch.zeros(1, 3, 48, 48), "sampling_rate": None},
            ValueError,
            "classifies audio, not images",
        ),
        ({"sampling_rate": None}, ValueError, "Nothing to explain"),
    ],
)
def test_bad_audio_inputs_are_refused(ast, kwargs, error, match):
    kwargs = {"sampling_rate": SAMPLING_RATE, **kwargs}
    with pytest.raises(error, match=match):
        LeGradExplainer(ast.model, ast.processor).explain(**kwargs)


def test_audio_needs_the_feature_extractor_it_was_made_for(ast):
    with pytest.raises(ValueError, match="AutoFeatureExtractor.from_pretrained"):
        LeGradExplainer(ast.model).explain(audio=clips()[0], sampling_rate=SAMPLING_RATE)
    other = tiny_audio.feature_extractor()
    other.num_mel_bins = 16
    with pytest.raises(ValueError, match=r"\(96, 16\) .* takes \(96, 32\)"):
        LeGradExplainer(ast.model, other).explain(audio=clips()[0], sampling_rate=SAMPLING_RATE)


def test_image_model_refuses_audio():
    vit = tiny_models.make_vit()
    explainer = LeGradExplainer(vit.model, vit.processor)
    with pytest.raises(ValueError, match="are for audio classifiers .* not audio"):
        explainer.explain(audio=clips()[0], sampling_rate=SAMPLING_RATE)
    with pytest.raises(ValueError, match="are for audio classifiers"):
        explainer.explain(input_values=torch.zeros(1, FRAMES, MEL_BINS))
    out = explainer.explain(images=tiny_models.random_image(0))
    assert out.frame_times is None
    with pytest.raises(ValueError, match="no time axis"):
        out.relevance_over_time()
    with pytest.raises(ValueError, match=r"\[batch, targets, mel bins, time frames\]"):
        maps.relevance_over_time(out.heatmaps[0])


def test_tone_burst_is_found_in_time():
    """Known answer: 20 clips of noise with a 150 ms tone burst at a random time; the relevance-over-time peak of
    the constructed tone detector's "tone" class must fall inside the burst far more often than chance (150 ms of
    the 975 ms clip: 15%). Measured: 19 of 20 clips (95%) for both scores."""
    model = tiny_audio.make_tone_detector()
    extractor = tiny_audio.feature_extractor()
    rng = np.random.default_rng(0)
    duration, samples = 0.15, samples_for_frames(FRAMES)
    starts = rng.uniform(0.05, 0.95 - duration, 20)
    waves = [
        tiny_audio.tone_burst(samples, float(start), duration, seed, frequency=float(rng.uniform(600, 2000)), level=0.3)
        for seed, start in enumerate(starts)
    ]
    for score in ("legrad", "model"):
        out = LeGradExplainer(model, extractor, score=score).explain(
            audio=waves, sampling_rate=SAMPLING_RATE, targets=["tone"]
        )
        peaks = out.frame_times[out.relevance_over_time()[:, 0].argmax(dim=-1)].numpy()
        rate = float(((starts <= peaks) & (peaks <= starts + duration)).mean())
        assert rate >= 0.75, f"score={score}: the peak fell inside the burst in {rate:.0%} of the clips"
    # Without a burst there is no answer: the same clips' noise alone peaks anywhere, not at the burst times.
    quiet = [tiny_audio.noise(samples, seed, level=0.3) for seed in range(20)]
    out = LeGradExplainer(model, extractor).explain(audio=quiet, sampling_rate=SAMPLING_RATE, targets=["tone"])
    peaks = out.frame_times[out.relevance_over_time()[:, 0].argmax(dim=-1)].numpy()
    assert float(((starts <= peaks) & (peaks <= starts + duration)).mean()) <= 0.5


def test_constructed_detector_uses_the_models_own_forward():
    """The tone detector is an ordinary AST: its maps equal the reference too (one block, both scores)."""
    model = tiny_audio.make_tone_detector()
    waves = [tiny_audio.tone_burst(samples_for_frames(FRAMES), 0.4, 0.15, seed=1, level=0.3)]
    values = tiny_audio.feature_extractor()(waves, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]
    for score, pooling in (("legrad", "mean"), ("model", "model")):
        out = LeGradExplainer(model, score=score).explain(input_values=values, targets=[1], return_layer_maps=True)
        reference = reference_layer_maps(model, values, torch.tensor([[1]]), [0], pooling)
        assert_raw_maps_match(out.layer_maps, reference)
