"""Pictures of maps over time (`transformers_legrad.visualize_media`): the overlay lands where the map is hot, in
the right frame of the strip and of the GIF; the spectrogram has its low frequencies at the bottom and time to the
right; the relevance-over-time curve peaks at the hot time, on the spectrogram's time axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_legrad.maps import relevance_over_time
from transformers_legrad.visualize_media import (
    _CURVE_COLOR,
    save_video_gif,
    spectrogram_figure,
    video_strip,
)

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def solid_frames(count: int, size=(64, 64)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLORS[index % len(COLORS)]) for index in range(count)]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the True pixels, right and bottom exclusive."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert len(rows), "no pixel is set"
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def changed(first: Image.Image, second: Image.Image) -> np.ndarray:
    assert first.size == second.size
    return (pixels(first) != pixels(second)).any(axis=-1)


def tile_box(strip: Image.Image, color) -> tuple[int, int, int, int]:
    return bbox((pixels(strip) == color).all(axis=-1))


# --- strip -------------------------------------------------------------------------------------------------------
def test_strip_overlay_is_on_the_hot_quadrant_of_the_hot_frame():
    frames = solid_frames(4)
    cold = np.zeros((4, 64, 64), np.float32)
    hot = cold.copy()
    hot[1, :32, :32] = 1.0  # top-left quarter of frame 1
    tile = tile_box(video_strip(frames, cold, alpha=0.0, tile_size=64), COLORS[1])
    assert (tile[2] - tile[0], tile[3] - tile[1]) == (64, 64)
    lit = bbox(changed(video_strip(frames, hot, tile_size=64), video_strip(frames, cold, tile_size=64)))
    assert lit == (tile[0], tile[1], tile[0] + 32, tile[1] + 32)


def test_strip_sizes_columns_and_title():
    frames = solid_frames(4, size=(100, 50))
    maps = np.zeros((4, 5, 10), np.float32)
    strip = video_strip(frames, maps, tile_size=64)
    first = tile_box(video_strip(frames, maps, alpha=0.0, tile_size=64), COLORS[0])
    assert (first[2] - first[0], first[3] - first[1]) == (64, 32)  # aspect ratio kept
    widths = [video_strip(frames[:count], maps[:count], tile_size=64).width for count in (2, 3, 4)]
    assert widths[2] - widths[1] == widths[1] - widths[0] > 64  # one cell per frame
    wrapped = video_strip(frames, maps, tile_size=64, columns=2)
    assert wrapped.width == widths[0] and wrapped.height > strip.height
    titled = video_strip(frames, maps, label="playing guitar", score=torch.tensor(0.873), tile_size=64)
    assert titled.width == strip.width and titled.height > strip.height
    assert video_strip(frames, torch.from_numpy(maps), frame_labels=["a", "b", "c", "d"]).mode == "RGB"


def test_strip_errors():
    frames = solid_frames(3)
    maps = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"2 frame maps for 3 frames.*sample_frames"):
        video_strip(frames, maps[:2])
    with pytest.raises(ValueError, match=r"\[frames, height, width\]"):
        video_strip(frames, maps[0])
    with pytest.raises(ValueError, match="NaN"):
        video_strip(frames, np.full((3, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-empty list of frames"):
        video_strip([], maps[:0])
    with pytest.raises(ValueError, match="alpha"):
        video_strip(frames, maps, alpha=2)
    with pytest.raises(ValueError, match="colormap"):
        video_strip(frames, maps, colormap="rainbow")
    with pytest.raises(ValueError, match="frame_labels"):
        video_strip(frames, maps, frame_labels=["only one"])
    with pytest.raises(TypeError, match="label"):
        video_strip(frames, maps, label=3)


def test_strip_takes_a_frame_array():
    video = np.stack([np.asarray(frame) for frame in solid_frames(2)])
    maps = np.zeros((2, 4, 4), np.float32)
    assert video_strip(video, maps, tile_size=64).size == video_strip(solid_frames(2), maps, tile_size=64).size


# --- GIF ---------------------------------------------------------------------------------------------------------
def read_gif(path) -> tuple[list[np.ndarray], list[int], int]:
    with Image.open(path) as gif:
        frames, durations = [], []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(pixels(gif))
            durations.append(gif.info["duration"])
        return frames, durations, gif.info.get("loop")


def test_gif_frames_durations_and_hot_region(tmp_path):
    frames = solid_frames(5)
    maps = np.zeros((5, 64, 64), np.float32)
    maps[1, :32, :32] = 1.0  # top-left of frame 1
    path = save_video_gif(tmp_path / "clip.gif", frames, maps, fps=4)
    read, durations, loop = read_gif(path)
    assert len(read) == 5 and durations == [250] * 5 and loop == 0
    for index, frame in enumerate(read):
        top_left, bottom_right = frame[:32, :32].mean(axis=(0, 1)), frame[32:, 32:].mean(axis=(0, 1))
        if index == 1:  # the hot quarter is colored, the rest is not
            assert np.abs(top_left - bottom_right).sum() > 100
        else:
            assert np.abs(top_left - bottom_right).sum() < 3


def test_gif_fps_size_and_errors(tmp_path):
    frames = solid_frames(3)
    maps = np.zeros((3, 8, 8), np.float32)
    _, durations, _ = read_gif(save_video_gif(tmp_path / "a.gif", frames, maps, fps=3, loop=2))
    assert durations == [330] * 3  # GIF delays are hundredths of a second
    path = save_video_gif(tmp_path / "b.gif", solid_frames(3, size=(64, 48)), maps, size=32)
    assert Image.open(path).size == (32, 24)
    for fps in (0, -1, 60, True):
        with pytest.raises(ValueError, match="fps"):
            save_video_gif(tmp_path / "c.gif", frames, maps, fps=fps)
    with pytest.raises(ValueError, match="2 frame maps for 3 frames"):
        save_video_gif(tmp_path / "c.gif", frames, maps[:2])


# --- spectrogram -------------------------------------------------------------------------------------------------
MEL, TIME = 32, 40
FLAT = np.zeros(TIME, np.float32)


def figure(heatmap, spectrogram=None, **kwargs) -> Image.Image:
    spectrogram = np.zeros((MEL, TIME), np.float32) if spectrogram is None else spectrogram
    return spectrogram_figure(spectrogram, heatmap, **{"width": 200, "height": 64, "curve_height": 48, **kwargs})


def panel_box() -> tuple[int, int, int, int]:
    """Where the spectrogram lies in the figure: the pixels a map hot everywhere changes."""
    return bbox(
        changed(
            figure(np.ones((MEL, TIME)), relevance_over_time=FLAT),
            figure(np.zeros((MEL, TIME)), relevance_over_time=FLAT),
        )
    )


def test_spectrogram_panel_has_the_requested_size():
    left, top, right, bottom = panel_box()
    assert (right - left, bottom - top) == (200, 64)


def test_low_frequencies_of_the_map_light_the_bottom():
    left, top, right, bottom = panel_box()
    low = np.zeros((MEL, TIME), np.float32)
    low[: MEL // 4] = 1.0  # the lowest quarter of the mel bins
    lit = bbox(changed(figure(low, relevance_over_time=FLAT), figure(np.zeros((MEL, TIME)), relevance_over_time=FLAT)))
    assert lit[3] == bottom and lit[0] == left and lit[2] == right
    assert abs(lit[1] - (bottom - 64 // 4)) <= 2  # bilinear stretching blurs the edge by a pixel or so


def test_low_frequency_energy_of_the_spectrogram_is_at_the_bottom():
    left, top, right, bottom = panel_box()
    spectrogram = np.full((MEL, TIME), -80.0, np.float32)
    spectrogram[: MEL // 4] = 0.0  # loud at the lowest mel bins (dB)
    picture = pixels(figure(np.zeros((MEL, TIME)), spectrogram=spectrogram, alpha=0.0))[top:bottom, left:right]
    assert picture[-8:].min() == 255 and picture[:40].max() == 0  # white at the bottom, black above


def test_late_map_lights_the_right_and_the_curve_peaks_there():
    left, top, right, bottom = panel_box()
    late = np.zeros((MEL, TIME), np.float32)
    late[:, 30:34] = 1.0  # time frames 30..33 of 40
    lit = bbox(changed(figure(late, relevance_over_time=FLAT), figure(np.zeros((MEL, TIME)), relevance_over_time=FLAT)))
    assert abs(lit[0] - (left + 30 * 200 / TIME)) <= 3 and abs(lit[2] - (left + 34 * 200 / TIME)) <= 3
    # The default curve is the map's mean over mel bins, drawn on the same time axis as the spectrogram.
    default = figure(late)
    mean_over_mel = relevance_over_time(torch.from_numpy(late)[None, None])[0, 0]
    assert not changed(default, figure(late, relevance_over_time=mean_over_mel)).any()
    curve = (pixels(default) == _CURVE_COLOR).all(axis=-1)
    assert bbox(curve)[0] == left and bbox(curve)[2] == right  # the curve spans the time axis
    top_row = bbox(curve)[1]
    peak_columns = np.flatnonzero(curve[top_row])
    assert lit[0] <= peak_columns.min() and peak_columns.max() < lit[2]


@pytest.mark.parametrize("peak", [3, 20, 36])
def test_curve_peak_at_the_hot_time(peak):
    samples = 41
    relevance = np.zeros(samples, np.float32)
    relevance[peak] = 0.3  # scaled: the peak touches the top of the panel whatever its value
    curve = (pixels(figure(np.zeros((MEL, TIME)), relevance_over_time=relevance)) == _CURVE_COLOR).all(axis=-1)
    left, top, right, bottom = bbox(curve)
    peak_column = np.flatnonzero(curve[top]).mean()
    # Sample i is drawn at the center of its 1 / samples of the time axis, within a quarter sample.
    assert abs((peak_column - left + 0.5) / (right - left) - (peak + 0.5) / samples) <= 0.25 / samples
    assert bottom - top >= 48 - 3  # from the bottom of the panel to its top


def test_spectrogram_title_ticks_and_tensors():
    heatmap = torch.zeros(MEL, TIME)
    plain = figure(heatmap)
    titled = figure(heatmap, label="dog bark", score=0.5)
    assert titled.width == plain.width and titled.height > plain.height
    seconds = figure(heatmap, seconds_per_frame=0.01)
    assert seconds.size == plain.size and changed(seconds, plain).any()
    # A map at token resolution is stretched over the spectrogram.
    assert figure(np.zeros((4, 5))).size == plain.size


def test_spectrogram_errors():
    maps = np.zeros((MEL, TIME), np.float32)
    with pytest.raises(ValueError, match=r"\[mel bins, time frames\]"):
        figure(maps, spectrogram=np.zeros(TIME))
    with pytest.raises(ValueError, match="NaN or infinite"):
        figure(maps, spectrogram=np.full((MEL, TIME), -np.inf))
    with pytest.raises(ValueError, match="NaN"):
        figure(np.full((MEL, TIME), np.nan))
    with pytest.raises(ValueError, match="relevance_over_time"):
        figure(maps, relevance_over_time=np.zeros((2, TIME)))
    with pytest.raises(ValueError, match="relevance_over_time"):
        figure(maps, relevance_over_time=np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="seconds_per_frame"):
        figure(maps, seconds_per_frame=0)
    with pytest.raises(ValueError, match="width"):
        figure(maps, width=10)
    with pytest.raises(ValueError, match="alpha"):
        figure(maps, alpha=-0.1)
