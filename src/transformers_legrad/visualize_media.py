"""Pictures of LeGrad maps over time: a strip and an animated GIF for videos, a spectrogram figure for audio.

Built from the same pieces as `visualize` (its colormaps, overlays, fonts and colorbar; plain PIL and numpy):

- `video_strip`: a row of frames, each with its map over it, captioned, with the label and score as a title;
- `save_video_gif`: the overlaid frames as an animated GIF;
- `spectrogram_figure`: the log-mel spectrogram with the map over it (low frequencies at the bottom, time to the
  right) and, under it on the same time axis, the relevance over time: when in the clip the class is.

Video maps are [frames, height, width] in [0, 1] (one target of `LeGradOutput.heatmaps` [batch, targets, frames,
height, width]), one per frame given, each stretched over its frame (see `visualize` for cropping processors).
Audio maps are [mel bins, time frames] in [0, 1], lowest mel bin first, on the spectrogram given: the model's input
features, e.g. ``inputs["input_values"][0].T`` for AST, whose feature extractor writes [time frames, mel bins].

Example:
    >>> from transformers_legrad.visualize_media import save_video_gif, spectrogram_figure, video_strip
    >>> video_strip(frames, out.heatmaps[0, 0], label=out.labels[0], score=out.scores[0, 0]).save("strip.png")
    >>> save_video_gif("clip.gif", frames, out.heatmaps[0, 0], fps=4)
    >>> spectrogram_figure(inputs["input_values"][0].T, out.heatmaps[0, 0], label=out.labels[0]).save("clip.png")
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import maps as maps_module
from ._colormaps import colormap_table
from .images import BACKGROUND
from .visualize import (
    _FRAME_COLOR,
    _MIN_TILE_SIZE,
    _SCORE_COLOR,
    _TEXT_COLOR,
    MapLike,
    _as_float_map,
    _as_rgb,
    _check_alpha,
    _check_positive_int,
    _check_values,
    _colorize_array,
    _default_font,
    _draw_centered,
    _draw_colorbar,
    _fit_to_square,
    _format_scores,
    _line_height,
    _resize_map,
    _to_numpy,
    _wrap,
    overlay,
)

__all__ = ["save_gif", "save_video_gif", "spectrogram_figure", "video_strip"]

FrameLike = Image.Image | np.ndarray
#: The relevance-over-time curve and the area under it.
_CURVE_COLOR = (31, 119, 180)
_CURVE_FILL = (198, 219, 239)
# GIF frame delays are whole hundredths of a second, and browsers slow delays under 0.02 s down to 0.1 s.
_MAX_GIF_FPS = 50.0


# --- video -------------------------------------------------------------------------------------------------------
def video_strip(
    frames: Sequence[FrameLike] | np.ndarray,
    heatmaps: MapLike,
    label: str | None = None,
    score: float | None = None,
    alpha: float = 0.5,
    colormap: str = "inferno",
    tile_size: int = 128,
    columns: int | None = None,
    frame_labels: Sequence[str] | None = None,
) -> Image.Image:
    """A strip of frames, each with its map over it, captioned, under a title, above a colorbar from 0 to 1.

    Args:
        frames: the frames the maps belong to (the sampled frames the model saw): PIL images or uint8 arrays
            [height, width(, 3|4)], or a uint8 array [frames, height, width, 3].
        heatmaps: float [frames, h, w] maps in [0, 1], one per frame (e.g. `LeGradOutput.heatmaps[b, k]`).
        label: optional title (the class), written above the strip.
        score: optional number written under the title as "0.873" (e.g. `LeGradOutput.scores[b, k]`).
        alpha: weight of the colorized maps in the overlays, in [0, 1].
        colormap: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".
        tile_size: the longer side of each frame's picture, in pixels (at least 32).
        columns: frames per row; default all in one row.
        frame_labels: one caption per frame (e.g. the sampled indices or times); default "frame 0", "frame 1", ...

    Returns:
        RGB image on a white background.

    Raises:
        ValueError: frames and maps differ in number, a bad shape, alpha, tile size, columns or colormap, NaN.
        TypeError: a frame that is not an image, a label that is not a string.
    """
    pictures, maps = _frames_and_maps(frames, heatmaps)
    _check_alpha(alpha)
    colormap_table(colormap)
    tile_size = _check_positive_int(tile_size, "tile_size", minimum=_MIN_TILE_SIZE)
    columns = len(pictures) if columns is None else min(_check_positive_int(columns, "columns"), len(pictures))
    captions = _frame_captions(frame_labels, len(pictures))
    tiles = [
        overlay(_fit_to_square(picture, tile_size), heatmap, alpha, colormap)
        for picture, heatmap in zip(pictures, maps, strict=True)
    ]

    font = _default_font(max(10, round(tile_size / 12)))
    line_height = _line_height(font)
    padding = max(4, tile_size // 32)
    cell_width = max(max(tile.width for tile in tiles), tile_size // 2)
    cell_height = max(tile.height for tile in tiles) + line_height + padding
    rows = math.ceil(len(tiles) / columns)
    width = columns * cell_width + (columns + 1) * padding
    title = _title_lines(label, score, font, width - 2 * padding)
    top = padding + len(title) * line_height
    canvas = Image.new("RGB", (width, top + rows * (cell_height + padding) + 2 * line_height + padding), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_title(draw, title, font, width, padding, line_height)
    for index, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        left = padding + (index % columns) * (cell_width + padding)
        tile_top = top + padding + (index // columns) * (cell_height + padding)
        tile_left = left + (cell_width - tile.width) // 2
        canvas.paste(tile, (tile_left, tile_top))
        draw.rectangle(
            (tile_left - 1, tile_top - 1, tile_left + tile.width, tile_top + tile.height), outline=_FRAME_COLOR
        )
        caption = _wrap(caption, font, cell_width, 1)[0]
        _draw_centered(draw, caption, font, left, cell_width, tile_top + tile.height + padding // 2, _TEXT_COLOR)
    _draw_colorbar(canvas, colormap, font, top=top + rows * (cell_height + padding) + padding, padding=padding)
    return canvas


def save_video_gif(
    path: str | os.PathLike,
    frames: Sequence[FrameLike] | np.ndarray,
    heatmaps: MapLike,
    fps: float = 4.0,
    alpha: float = 0.5,
    colormap: str = "inferno",
    size: int | None = None,
    loop: int = 0,
) -> Path:
    """Write the frames with their maps over them as an animated GIF.

    Each frame is `overlay(frame, heatmap)`, quantized to the GIF's 256 colours by Pillow. Pillow merges
    consecutive frames that are pixel-for-pixel identical into one (their delays add up).

    Args:
        path: the file to write (GIF whatever the suffix); its folder must exist.
        frames: as in `video_strip`.
        heatmaps: float [frames, h, w] maps in [0, 1], one per frame.
        fps: frames per second, at most 50; each delay is 1/fps rounded to a hundredth of a second.
        alpha: weight of the colorized maps, in [0, 1].
        colormap: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".
        size: the longer side of the frames in pixels (at least 32); None keeps the frames' size.
        loop: how many times the animation repeats; 0 forever.

    Returns:
        The path written.

    Raises:
        ValueError: as `video_strip`, or a bad fps, size or loop.
    """
    pictures, maps = _frames_and_maps(frames, heatmaps)
    _check_alpha(alpha)
    colormap_table(colormap)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps <= _MAX_GIF_FPS:
        raise ValueError(f"`fps` must be a number in (0, {_MAX_GIF_FPS:g}], got {fps!r}.")
    _check_positive_int(loop, "loop", minimum=0)  # before the overlays are drawn
    if size is not None:
        size = _check_positive_int(size, "size", minimum=_MIN_TILE_SIZE)
        pictures = [_fit_to_square(picture, size) for picture in pictures]
    overlays = [overlay(picture, heatmap, alpha, colormap) for picture, heatmap in zip(pictures, maps, strict=True)]
    return save_gif(path, overlays, fps=fps, loop=loop)


def save_gif(path: str | os.PathLike, pictures: Sequence[Image.Image], fps: float = 4.0, loop: int = 0) -> Path:
    """Write pictures (e.g. the pipeline's per-frame overlays, `result["frames"]`) as an animated GIF.

    Args:
        path: the file to write (GIF whatever the suffix); its folder must exist.
        pictures: the frames, RGB PIL images of one size, quantized to the GIF's 256 colours by Pillow.
        fps: frames per second, at most 50; each delay is 1/fps rounded to a hundredth of a second.
        loop: how many times the animation repeats; 0 forever.

    Returns:
        The path written.

    Raises:
        ValueError: no pictures, or a bad fps or loop.
    """
    if isinstance(pictures, Image.Image) or not isinstance(pictures, Sequence) or len(pictures) == 0:
        raise ValueError("`pictures` must be a non-empty list of PIL images.")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps <= _MAX_GIF_FPS:
        raise ValueError(f"`fps` must be a number in (0, {_MAX_GIF_FPS:g}], got {fps!r}.")
    loop = _check_positive_int(loop, "loop", minimum=0)
    delay_ms = 10 * max(1, round(100 / fps))
    path = Path(path)
    pictures[0].save(
        path, format="GIF", save_all=True, append_images=list(pictures[1:]), duration=delay_ms, loop=loop, disposal=1
    )
    return path


def _frames_and_maps(frames, heatmaps: MapLike) -> tuple[list[Image.Image], np.ndarray]:
    """The frames as RGB images and their [frames, h, w] maps as float32 in [0, 1], as many of each."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if isinstance(frames, (Image.Image, np.ndarray)) or not isinstance(frames, Sequence) or len(frames) == 0:
        raise ValueError("`frames` must be a non-empty list of frames or a [frames, height, width, 3] uint8 array.")
    maps = _to_numpy(heatmaps)
    if maps.ndim != 3:
        raise ValueError(
            f"`heatmaps` must be the [frames, height, width] maps of one target (e.g. `out.heatmaps[0, 0]`), got "
            f"shape {tuple(maps.shape)}."
        )
    if len(maps) != len(frames):
        raise ValueError(
            f"`heatmaps` holds {len(maps)} frame maps for {len(frames)} frames: give the frames the model saw "
            "(`media.sample_frames(frames, model.config.num_frames)`)."
        )
    return [_as_rgb(frame) for frame in frames], _check_values(maps, "heatmaps")


def _frame_captions(frame_labels: Sequence[str] | None, count: int) -> list[str]:
    if frame_labels is None:
        return [f"frame {index}" for index in range(count)]
    captions = [frame_labels] if isinstance(frame_labels, str) else list(frame_labels)
    if len(captions) != count or not all(isinstance(caption, str) for caption in captions):
        raise ValueError(f"`frame_labels` must hold one string per frame ({count}), got {frame_labels!r}.")
    return captions


# --- audio -------------------------------------------------------------------------------------------------------
def spectrogram_figure(
    spectrogram: MapLike,
    heatmap: MapLike,
    relevance_over_time: MapLike | None = None,
    label: str | None = None,
    score: float | None = None,
    alpha: float = 0.5,
    colormap: str = "inferno",
    width: int = 768,
    height: int = 192,
    curve_height: int = 96,
    seconds_per_frame: float | None = None,
) -> Image.Image:
    """The spectrogram with the map over it, and the relevance over time under it on the same time axis.

    The spectrogram is drawn in gray from its lowest value (black) to its highest (white), lowest mel bin at the
    bottom and time to the right; the map is colorized and blended over it. Under it, the relevance over time,
    scaled so that its peak touches the top of its panel; then a 0 .. 1 colorbar for the map.

    Args:
        spectrogram: float [mel bins, time frames], lowest frequency first, in any unit (log-mel dB, or the
            normalized features a model takes: ``inputs["input_values"][0].T`` for AST).
        heatmap: float [mel bins, time frames] map in [0, 1], lowest frequency first (e.g.
            `LeGradOutput.heatmaps[b, k]`); stretched over the spectrogram if the sizes differ.
        relevance_over_time: optional float [time] curve (any length, stretched along the time axis); default
            `maps.relevance_over_time` of the map: its mean over mel bins.
        label: optional title (the class), written above the figure.
        score: optional number written under the title as "0.873".
        alpha: weight of the colorized map over the spectrogram, in [0, 1].
        colormap: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".
        width: the width of the spectrogram and of the curve, in pixels (at least 32).
        height: the height of the spectrogram, in pixels (at least 32).
        curve_height: the height of the curve's panel, in pixels (at least 32).
        seconds_per_frame: the time between spectrogram frames (the feature extractor's hop, 0.01 for AST); the
            time axis is then labelled in seconds, otherwise in frames.

    Returns:
        RGB image on a white background.

    Raises:
        ValueError: a bad shape, size, alpha or colormap, a spectrogram that is not finite, NaN in the map or curve.
    """
    _check_alpha(alpha)
    colormap_table(colormap)
    width = _check_positive_int(width, "width", minimum=_MIN_TILE_SIZE)
    height = _check_positive_int(height, "height", minimum=_MIN_TILE_SIZE)
    curve_height = _check_positive_int(curve_height, "curve_height", minimum=_MIN_TILE_SIZE)
    if seconds_per_frame is not None and (
        isinstance(seconds_per_frame, bool) or not isinstance(seconds_per_frame, numbers.Real) or seconds_per_frame <= 0
    ):
        raise ValueError(f"`seconds_per_frame` must be a positive number, got {seconds_per_frame!r}.")
    gray = _spectrogram_gray(spectrogram)
    values = _as_float_map(heatmap)
    if relevance_over_time is None:  # the map's mean over mel bins, as `LeGradOutput.relevance_over_time()`
        curve = maps_module.relevance_over_time(torch.from_numpy(values)[None, None])[0, 0].numpy()
    else:
        curve = _check_curve(relevance_over_time)

    # Row 0 of the arrays is the lowest mel bin; row 0 of a picture is its top: flip.
    shown = Image.fromarray(np.rint(_resize_map(gray[::-1].copy(), (width, height)) * 255).astype(np.uint8))
    colored = Image.fromarray(_colorize_array(_resize_map(values[::-1].copy(), (width, height)), colormap))
    panel = Image.blend(shown.convert("RGB"), colored, float(alpha))

    font = _default_font(max(10, round(height / 14)))
    line_height = _line_height(font)
    padding = max(4, height // 32)
    margin = padding + math.ceil(max(font.getlength("high"), font.getlength("low"))) + padding
    canvas_width = margin + width + 2 * padding
    title = _title_lines(label, score, font, canvas_width - 2 * padding)
    spectrogram_top = padding + len(title) * line_height + padding
    curve_top = spectrogram_top + height + padding
    ticks_top = curve_top + curve_height + padding // 2
    colorbar_top = ticks_top + line_height + padding
    canvas = Image.new("RGB", (canvas_width, colorbar_top + 2 * line_height + padding), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_title(draw, title, font, canvas_width, padding, line_height)
    canvas.paste(panel, (margin, spectrogram_top))
    draw.rectangle((margin - 1, spectrogram_top - 1, margin + width, spectrogram_top + height), outline=_FRAME_COLOR)
    draw.text((padding, spectrogram_top), "high", font=font, fill=_SCORE_COLOR)
    draw.text((padding, spectrogram_top + height - line_height), "low", font=font, fill=_SCORE_COLOR)
    _draw_curve(draw, curve, (margin, curve_top, width, curve_height))
    _draw_time_ticks(draw, font, gray.shape[1], seconds_per_frame, margin, width, ticks_top)
    _draw_colorbar(canvas, colormap, font, top=colorbar_top, padding=padding)
    return canvas


def _spectrogram_gray(spectrogram: MapLike) -> np.ndarray:
    """A [mel, time] spectrogram as float32 in [0, 1], its lowest value 0 and its highest 1."""
    values = _to_numpy(spectrogram)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(
            f"`spectrogram` must be a non-empty [mel bins, time frames] array, got shape {tuple(values.shape)} (AST: "
            "`inputs['input_values'][0].T`)."
        )
    if not np.isfinite(values).all():
        raise ValueError("`spectrogram` holds NaN or infinite values; give a finite (e.g. log-mel, dB) spectrogram.")
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _check_curve(curve: MapLike) -> np.ndarray:
    values = _to_numpy(curve)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"`relevance_over_time` must be a non-empty [time] curve, got shape {tuple(values.shape)}.")
    if not np.isfinite(values).all():
        raise ValueError("`relevance_over_time` holds NaN or infinite values.")
    return values


def _draw_curve(draw: ImageDraw.ImageDraw, curve: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """The curve over the panel `box` = (left, top, width, height): its samples spread evenly over the width,
    linearly interpolated at each pixel column's center, 0 at the bottom and the curve's peak at the top."""
    left, top, width, height = box
    # Pixel column j covers [j, j + 1) of the width, i.e. time (j + 0.5) / width of the clip; sample i its center.
    positions = (np.arange(width) + 0.5) / width * len(curve) - 0.5
    values = np.clip(np.interp(positions, np.arange(len(curve)), curve), 0.0, None)
    peak = float(values.max())
    heights = values / peak if peak > 0 else values
    bottom = top + height - 1
    points = [(left + column, bottom - round(float(level) * (height - 2))) for column, level in enumerate(heights)]
    draw.rectangle((left - 1, top - 1, left + width, top + height), outline=_FRAME_COLOR)
    draw.polygon([(left, bottom)] + points + [(left + width - 1, bottom)], fill=_CURVE_FILL)
    draw.line(points, fill=_CURVE_COLOR, width=1)


def _draw_time_ticks(draw, font, frames: int, seconds_per_frame: float | None, left: int, width: int, top: int) -> None:
    """Start, middle and end of the time axis, in seconds when the frame step is known, otherwise in frames."""
    for fraction in (0.0, 0.5, 1.0):
        position = fraction * frames
        text = f"{position * seconds_per_frame:.2f} s" if seconds_per_frame else f"{position:g}"
        # Flush left at the start, centered in the middle, flush right at the end.
        draw.text((left + fraction * (width - font.getlength(text)), top), text, font=font, fill=_SCORE_COLOR)


# --- titles ------------------------------------------------------------------------------------------------------
def _title_lines(label: str | None, score: float | None, font, width: int) -> list[tuple[str, tuple]]:
    """The title's lines and colours: the label (ellipsized to `width`) and the score as "0.873", when given."""
    lines = []
    if label is not None:
        if not isinstance(label, str):
            raise TypeError(f"`label` must be a string, got {type(label).__name__}: {label!r}.")
        lines.append((_wrap(label, font, width, 1)[0], _TEXT_COLOR))
    if score is not None:
        lines.append((_format_scores(score, 1)[0], _SCORE_COLOR))
    return lines


def _draw_title(draw: ImageDraw.ImageDraw, lines, font, width: int, padding: int, line_height: int) -> None:
    for index, (text, color) in enumerate(lines):
        _draw_centered(draw, text, font, 0, width, padding + index * line_height, color)
