"""Reading videos and audio clips (`transformers_legrad.media`): every source kind, natural frame order, uniform
frame sampling by transformers' rule, mono mixing, resampling equal to transformers' own loader, and every error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_legrad.images import ImageReadError
from transformers_legrad.media import (
    AudioReadError,
    VideoReadError,
    load_audio,
    load_video,
    natural_sort_key,
    sample_frames,
)


def solid(value: int, size=(8, 6)) -> Image.Image:
    """A frame whose red channel is `value`: its identity survives reading."""
    return Image.new("RGB", size, (value, 255 - value, 7))


def red_values(frames) -> list[int]:
    return [int(np.asarray(frame)[0, 0, 0]) for frame in frames]


# --- video: folders ----------------------------------------------------------------------------------------------
def test_natural_sort_key_orders_numbers_as_numbers():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame1.png", "frame02b.png", "frame100.png", "a.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a.png",
        "Frame1.png",
        "frame1.png",
        "frame2.png",
        "frame02b.png",
        "frame10.png",
        "frame100.png",
    ]


def test_folder_frames_in_natural_order_other_files_ignored(tmp_path):
    for number in (10, 2, 1, 33, 3):
        solid(number).save(tmp_path / f"frame{number}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".thumbnail.png").write_bytes(b"hidden, not read")
    (tmp_path / "sub").mkdir()
    solid(200).save(tmp_path / "sub" / "frame0.png")
    frames = load_video(tmp_path)
    assert red_values(frames) == [1, 2, 3, 10, 33]
    assert all(frame.mode == "RGB" and frame.size == (8, 6) for frame in frames)
    assert red_values(load_video(str(tmp_path))) == [1, 2, 3, 10, 33]


def test_empty_folder(tmp_path):
    with pytest.raises(VideoReadError, match="empty folder"):
        load_video(tmp_path)


def test_folder_without_images_names_what_it_found(tmp_path):
    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VideoReadError, match=r"no frame images.*2 other files: clip.wav, readme.txt.*\.png"):
        load_video(tmp_path)


def test_folder_with_a_corrupt_frame_names_it(tmp_path):
    solid(1).save(tmp_path / "frame1.png")
    (tmp_path / "frame2.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="frame2.png"):
        load_video(tmp_path)


def test_frames_of_different_sizes(tmp_path):
    solid(1).save(tmp_path / "frame1.png")
    solid(2, size=(9, 6)).save(tmp_path / "frame2.png")
    with pytest.raises(VideoReadError, match=r"one size: frame 0 is 8x6, frame 1 is 9x6"):
        load_video(tmp_path)


# --- video: files ------------------------------------------------------------------------------------------------
def test_animated_gif_gives_every_frame(tmp_path):
    path = tmp_path / "clip.gif"
    values = [0, 60, 120, 180, 240]
    first, *rest = [solid(value) for value in values]
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    frames = load_video(path)
    assert red_values(frames) == values
    assert all(frame.mode == "RGB" for frame in frames)


def test_still_image_file_is_one_frame(tmp_path):
    solid(42).save(tmp_path / "still.png")
    assert red_values(load_video(tmp_path / "still.png")) == [42]


def test_encoded_video_file_is_refused_with_a_recipe(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(VideoReadError, match=r"not decoded here.*ffmpeg -i clip.mp4"):
        load_video(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(VideoReadError, match="no such file"):
        load_video(tmp_path / "nope.gif")
    (tmp_path / "bad.gif").write_bytes(b"GIF89a truncated")
    with pytest.raises(VideoReadError, match=r"bad.gif: (unreadable|not an image)"):
        load_video(tmp_path / "bad.gif")
    (tmp_path / "text.gif").write_text("hello")
    with pytest.raises(VideoReadError, match="text.gif: not an image"):
        load_video(tmp_path / "text.gif")


# --- video: lists and arrays -------------------------------------------------------------------------------------
def test_list_of_pil_arrays_and_paths(tmp_path):
    solid(30).save(tmp_path / "third.png")
    array = np.asarray(solid(20))
    frames = load_video([solid(10), array, tmp_path / "third.png", str(tmp_path / "third.png")])
    assert red_values(frames) == [10, 20, 30, 30]
    with pytest.raises(VideoReadError, match="empty"):
        load_video([])


def test_uint8_float_channels_first_and_tensor_arrays():
    video = np.stack([np.asarray(solid(value)) for value in (5, 50, 250)])  # [frames, height, width, 3]
    assert red_values(load_video(video)) == [5, 50, 250]
    assert red_values(load_video(np.moveaxis(video, -1, 1))) == [5, 50, 250]  # [frames, 3, height, width]
    assert red_values(load_video(torch.from_numpy(video))) == [5, 50, 250]
    # Floats in [0, 1] are scaled once for the whole clip: a dark frame stays dark next to a bright one.
    floats = np.zeros((2, 6, 8, 3), np.float32)
    floats[0] = 0.2
    floats[1] = 1.0
    assert red_values(load_video(floats)) == [51, 255]
    gray = np.full((2, 6, 8, 1), 77, np.uint8)
    assert [frame.mode for frame in load_video(gray)] == ["RGB", "RGB"]


def test_a_list_of_float_frames_is_scaled_as_one_clip():
    """A fade-in in [0, 255] given frame by frame: the near-black first frame (values <= 1) is not taken for an
    image in [0, 1] and multiplied by 255; the scale is decided once, as for the [frames, ...] array."""
    fade = [np.full((6, 8, 3), value, np.float32) for value in (0.8, 100.0, 250.0)]
    assert red_values(load_video(fade)) == [1, 100, 250] == red_values(load_video(np.stack(fade)))
    assert red_values(load_video([np.full((6, 8), 0.5, np.float32), np.full((6, 8), 1.0, np.float32)])) == [128, 255]


def test_bad_arrays_and_types():
    with pytest.raises(VideoReadError, match=r"\[frames, height, width, channels\].*array\[None\]"):
        load_video(np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(VideoReadError, match="at least one frame"):
        load_video(np.zeros((0, 6, 8, 3), np.uint8))
    with pytest.raises(VideoReadError, match="finite"):
        load_video(np.full((2, 6, 8, 3), np.nan, np.float32))
    with pytest.raises(VideoReadError, match="shape"):
        load_video(np.zeros((2, 6, 8, 5), np.uint8))
    with pytest.raises(TypeError, match="a video must be"):
        load_video(12)


# --- sampling ----------------------------------------------------------------------------------------------------
def test_sample_frames_uniform_first_frame_kept():
    assert sample_frames(list(range(10)), 4) == [0, 2, 5, 7]
    assert sample_frames(list(range(32)), 16) == list(range(0, 32, 2))
    assert sample_frames(list(range(7)), 7) == list(range(7))
    assert sample_frames(["only"], 1) == ["only"]


@pytest.mark.parametrize(("total", "wanted"), [(10, 4), (17, 16), (300, 16), (33, 32), (5, 1), (16, 16)])
def test_sample_frames_follows_transformers_video_processors(total, wanted):
    from transformers.video_utils import VideoMetadata, default_sample_indices_fn

    expected = default_sample_indices_fn(VideoMetadata(total_num_frames=total), num_frames=wanted)
    assert sample_frames(list(range(total)), wanted) == expected.tolist()
    video = np.arange(total)[:, None, None, None] * np.ones((1, 2, 2, 3), np.int64)
    assert sample_frames(video, wanted)[:, 0, 0, 0].tolist() == expected.tolist()
    assert sample_frames(torch.from_numpy(video), wanted)[:, 0, 0, 0].tolist() == expected.tolist()


def test_sample_frames_errors():
    with pytest.raises(ValueError, match="takes 16 frames but the clip has 10"):
        sample_frames(list(range(10)), 16)
    for bad in (0, -2, 2.0, True, None):
        with pytest.raises(ValueError, match="positive integer"):
            sample_frames(list(range(10)), bad)


# --- audio: files ------------------------------------------------------------------------------------------------
def tone(frequency: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    time = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def peak_frequency(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[spectrum.argmax()])


@pytest.fixture
def soundfile():
    return pytest.importorskip("soundfile")


def test_mono_file_as_written(tmp_path, soundfile):
    path = tmp_path / "clip.wav"
    written = tone(440, 16000)
    soundfile.write(path, written, 16000, subtype="FLOAT")
    waveform, rate = load_audio(path)
    assert rate == 16000 and waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_array_equal(waveform, written)
    waveform, rate = load_audio(str(path), sampling_rate=16000, target_rate=16000)  # same rate: untouched
    np.testing.assert_array_equal(waveform, written)


def test_stereo_file_mixed_to_mono(tmp_path, soundfile):
    path = tmp_path / "stereo.flac"
    left, right = tone(440, 22050), tone(1000, 22050)
    soundfile.write(path, np.stack([left, right], axis=1), 22050, subtype="PCM_24")
    waveform, rate = load_audio(path)
    assert rate == 22050 and waveform.shape == left.shape
    np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-6)


def test_resampled_file_equals_transformers_loader(tmp_path, soundfile):
    pytest.importorskip("soxr")
    from transformers.audio_utils import load_audio as transformers_load_audio

    path = tmp_path / "stereo_22k.wav"
    soundfile.write(path, np.stack([tone(440, 22050), tone(440, 22050) * 0.5], axis=1), 22050)
    waveform, rate = load_audio(path, target_rate=16000)
    assert rate == 16000 and waveform.dtype == np.float32
    assert len(waveform) == int(np.ceil(len(tone(440, 22050)) * 16000 / 22050))
    expected = transformers_load_audio(str(path), sampling_rate=16000, backend="soundfile")
    np.testing.assert_array_equal(waveform, expected)
    assert peak_frequency(waveform, 16000) == pytest.approx(440, abs=2)


def test_file_rate_is_the_files(tmp_path, soundfile):
    path = tmp_path / "clip.wav"
    soundfile.write(path, tone(440, 8000), 8000)
    with pytest.raises(ValueError, match="file is at 8000 Hz but sampling_rate=16000"):
        load_audio(path, sampling_rate=16000)


def test_unreadable_missing_and_empty_files(tmp_path, soundfile):
    (tmp_path / "noise.wav").write_bytes(b"this is not a RIFF file at all" * 10)
    with pytest.raises(AudioReadError, match=r"noise.wav: unreadable audio"):
        load_audio(tmp_path / "noise.wav")
    with pytest.raises(AudioReadError, match="no such file"):
        load_audio(tmp_path / "absent.wav")
    with pytest.raises(AudioReadError, match="not a file"):
        load_audio(tmp_path)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioReadError, match=r"empty.wav: the clip has no samples"):
        load_audio(tmp_path / "empty.wav")


def test_missing_soundfile_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    monkeypatch.setitem(sys.modules, "soundfile", None)  # `import soundfile` now raises ImportError
    with pytest.raises(ImportError, match=r"soundfile.*transformers-legrad\[audio\]"):
        load_audio(tmp_path / "clip.wav")


# --- audio: arrays -----------------------------------------------------------------------------------------------
def test_arrays_mixed_scaled_and_rated():
    left, right = tone(300, 8000), tone(900, 8000)
    for stereo in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        waveform, rate = load_audio(stereo, sampling_rate=8000)
        assert rate == 8000
        np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-7)
    waveform, _ = load_audio(np.array([-32768, 0, 16384], np.int16), sampling_rate=8000)
    np.testing.assert_array_equal(waveform, np.array([-1.0, 0.0, 0.5], np.float32))
    waveform, rate = load_audio(torch.from_numpy(left), sampling_rate=8000)
    np.testing.assert_array_equal(waveform, left)
    # An array without its rate is taken at the feature extractor's, as transformers' audio pipelines take it.
    waveform, rate = load_audio(left, target_rate=8000)
    assert rate == 8000
    np.testing.assert_array_equal(waveform, left)


def test_array_resampled_when_soxr_is_there():
    pytest.importorskip("soxr")
    waveform, rate = load_audio(tone(440, 8000), sampling_rate=8000, target_rate=16000)
    assert rate == 16000 and len(waveform) == 8000
    assert peak_frequency(waveform, 16000) == pytest.approx(440, abs=2)


def test_rate_mismatch_without_soxr_names_both_rates(monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)
    with pytest.raises(ValueError, match=r"at 22050 Hz but the feature extractor expects 16000 Hz.*soxr"):
        load_audio(tone(440, 22050), sampling_rate=22050, target_rate=16000)
    waveform, rate = load_audio(tone(440, 16000), sampling_rate=16000, target_rate=16000)  # nothing to resample
    assert rate == 16000


def test_bad_waveforms():
    with pytest.raises(AudioReadError, match="no samples"):
        load_audio(np.zeros(0, np.float32), sampling_rate=16000)
    with pytest.raises(AudioReadError, match="no samples"):
        load_audio(np.zeros((0, 2), np.float32), sampling_rate=16000)
    nan = tone(440, 8000)
    nan[100] = np.nan
    with pytest.raises(AudioReadError, match=r"1 samples are NaN or infinite \(first: NaN at 100\)"):
        load_audio(nan, sampling_rate=8000)
    infinite = tone(440, 8000)
    infinite[7] = np.inf
    with pytest.raises(AudioReadError, match="infinite at 7"):
        load_audio(infinite, sampling_rate=8000)
    with pytest.raises(AudioReadError, match=r"\[samples\]"):
        load_audio(np.zeros((2, 3, 4), np.float32), sampling_rate=8000)
    with pytest.raises(TypeError, match="unsigned"):
        load_audio(np.zeros(10, np.uint8), sampling_rate=8000)
    with pytest.raises(TypeError, match="real numbers"):
        load_audio(np.zeros(10, np.complex64), sampling_rate=8000)
    with pytest.raises(TypeError, match="file path or a waveform array"):
        load_audio([0.0, 0.1], sampling_rate=8000)


def test_bad_rates():
    with pytest.raises(ValueError, match="needs its sampling_rate"):
        load_audio(tone(440, 8000))
    for bad in (0, -8000, 8000.5, True, "8000"):
        with pytest.raises(ValueError, match="`sampling_rate` must be a positive whole number"):
            load_audio(tone(440, 8000), sampling_rate=bad)
        with pytest.raises(ValueError, match="`target_rate` must be a positive whole number"):
            load_audio(tone(440, 8000), sampling_rate=8000, target_rate=bad)
