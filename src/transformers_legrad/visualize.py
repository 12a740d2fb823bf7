"""Pictures of LeGrad maps: colorized heatmaps, overlays on the image, and a labelled grid of all prompts.

Everything here is plain PIL and numpy (no matplotlib): the colormaps are embedded lookup tables (see
`_colormaps`), "inferno" by default, and "jet" with ``alpha=0.6`` for the look of the authors' figures.

Maps are float [height, width] arrays or tensors in [0, 1], as in `LeGradOutput.heatmaps[b, k]`; a grid takes the
[prompts, height, width] maps of one image, `LeGradOutput.heatmaps[b]`. Those maps are at the *processed* image
size (224 x 224 for CLIP after its resize and center crop) and are stretched here to the size of the image they
are drawn on. That is right only when the processor did not crop: for a center-cropping processor, draw on the
image cropped the same way (e.g. ``ImageOps.fit(image, (224, 224))`` for CLIP), or map the heatmaps back to the
full image first.

Example:
    >>> from transformers_legrad.visualize import grid_figure, overlay
    >>> out = explainer.explain(images=image, text=["a cat", "a remote control"])
    >>> overlay(image, out.heatmaps[0, 0]).save("cat.png")
    >>> grid_figure(image, out.heatmaps[0], out.labels, scores=out.scores[0]).save("grid.png")
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ._colormaps import COLORMAPS, colormap_table
from .images import BACKGROUND, to_rgb

__all__ = ["COLORMAPS", "colorize", "grid_figure", "heatmap_image", "overlay", "save_grid", "slug"]

MapLike = np.ndarray | torch.Tensor
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_TEXT_COLOR = (20, 20, 20)
_SCORE_COLOR = (90, 90, 90)
_FRAME_COLOR = (200, 200, 200)
#: The colour `draw_box` draws a detection's box in.
BOX_COLOR = (0, 230, 255)
_MAX_LABEL_LINES = 2
# A word of relevance r (relative to its prompt's largest) is shaded WORD_SHADE blended over white by r.
_WORD_SHADE = (255, 170, 40)
# The grid is at most this many tiles wide by default; more prompts add rows.
_MAX_DEFAULT_COLUMNS = 4
_MIN_TILE_SIZE = 32


# --- single maps -------------------------------------------------------------------------------------------------
def colorize(heatmap: MapLike, colormap: str = "inferno") -> Image.Image:
    """Color a map with a colormap.

    Args:
        heatmap: float [height, width] map in [0, 1] (numpy array or tensor); values outside are clipped.
        colormap: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".

    Returns:
        RGB image [height, width]: 0 takes the colormap's first colour and 1 its last.

    Raises:
        ValueError: the map is not 2-D, is empty, or holds NaN; the colormap is unknown.
    """
    colormap_table(colormap)
    return Image.fromarray(_colorize_array(_as_float_map(heatmap), colormap))


def overlay(
    image: Image.Image | np.ndarray, heatmap: MapLike, alpha: float = 0.5, colormap: str = "inferno"
) -> Image.Image:
    """Blend a colorized map over an image.

    The map is resized bilinearly (from its float values) to the image's size if the sizes differ, which assumes
    it covers the whole image: see the module docstring for cropping processors.

    Args:
        image: a PIL image of any mode, or a uint8 array [height, width] or [height, width, 3 or 4]; transparent
            pixels are drawn over white.
        heatmap: float [h, w] map in [0, 1] (numpy array or tensor); values outside are clipped.
        alpha: weight of the colorized map: 0 gives the image, 1 the colorized map.
        colormap: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".

    Returns:
        RGB image of the image's size: ``(1 - alpha) * image + alpha * colorize(heatmap)``.

    Raises:
        ValueError: alpha is outside [0, 1]; the map is not 2-D, is empty, or holds NaN; the colormap is unknown.
    """
    _check_alpha(alpha)
    colormap_table(colormap)
    heatmap = _as_float_map(heatmap)
    rgb = _as_rgb(image)
    colored = Image.fromarray(_colorize_array(_resize_map(heatmap, rgb.size), colormap))
    return Image.blend(rgb, colored, float(alpha))


def draw_box(
    image: Image.Image, box: Sequence[float], color: tuple[int, int, int] = BOX_COLOR, width: int | None = None
) -> Image.Image:
    """A copy of `image` with a rectangle drawn on it (a detection's box on its overlay).

    Args:
        image: a PIL image (converted to RGB).
        box: (xmin, ymin, xmax, ymax) in the image's pixels; parts outside the image are not drawn.
        color: the line's RGB colour.
        width: the line's width in pixels; None: about 1/150 of the image's longer side, at least 1.

    Raises:
        ValueError: `box` is not four finite numbers with xmin <= xmax and ymin <= ymax.
    """
    values = [float(v) for v in box]
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] > values[2] or values[1] > values[3]:
        raise ValueError(f"`box` must be (xmin, ymin, xmax, ymax) with xmin <= xmax and ymin <= ymax, got {box!r}.")
    drawn = _as_rgb(image).copy()
    line = width if width is not None else max(1, round(max(drawn.size) / 150))
    ImageDraw.Draw(drawn).rectangle(values, outline=tuple(color), width=_check_positive_int(line, "width"))
    return drawn


def heatmap_image(heatmap: MapLike, size: tuple[int, int] | None = None) -> Image.Image:
    """A map as an 8-bit grayscale image.

    Args:
        heatmap: float [height, width] map in [0, 1] (numpy array or tensor); values outside are clipped.
        size: (width, height) to resize to, bilinearly from the float values before they are quantized; None keeps
            the map's size.

    Returns:
        Mode "L" image whose pixels are ``round(255 * heatmap)``.

    Raises:
        ValueError: the map is not 2-D, is empty, or holds NaN; size is not two positive integers.
    """
    values = _as_float_map(heatmap)
    if size is not None:
        values = _resize_map(values, _check_size(size))
    return Image.fromarray(np.rint(values * 255).astype(np.uint8))


# --- the grid ----------------------------------------------------------------------------------------------------
def grid_figure(
    image: Image.Image | np.ndarray,
    heatmaps: MapLike,
    labels: str | Sequence[str],
    scores: Sequence[float] | MapLike | None = None,
    alpha: float = 0.5,
    colormap: str = "inferno",
    columns: int | None = None,
    tile_size: int = 256,
    words: Sequence[Sequence[tuple[str, float]]] | None = None,
) -> Image.Image:
    """A labelled grid: the image, then its overlay with each prompt's map, and a colorbar from 0 to 1.

    Each tile is the image scaled to fit a `tile_size` square (its aspect ratio kept), with a caption strip under
    it: the prompt, wrapped on up to two lines and ellipsized beyond, and its score as "0.873" when given.

    Args:
        image: a PIL image of any mode, or a uint8 array [height, width] or [height, width, 3 or 4].
        heatmaps: float [prompts, h, w] maps in [0, 1] (numpy array or tensor), e.g. `LeGradOutput.heatmaps[b]`;
            a single [h, w] map is one prompt. Each is stretched over the image (see `overlay`).
        labels: one string per prompt (a single string for one prompt).
        scores: optional [prompts] numbers shown under the labels, e.g. `LeGradOutput.scores[b]`.
        alpha: weight of the colorized maps in the overlays, in [0, 1].
        colormap: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".
        columns: tiles per row; default: all tiles in one row up to 4, else balanced rows of at most 4.
        tile_size: the longer side of each tile's picture, in pixels (at least 32).
        words: optional, per prompt, its (word, relevance) pairs (`LeGradOutput.word_relevance[b]`): the prompt is
            written word by word under its map instead of its label, each word shaded by its relevance relative to
            the prompt's most relevant word (white: none, amber: the most).

    Returns:
        RGB image of the whole grid on a white background.

    Raises:
        ValueError: a bad shape, length, alpha, columns, tile size or colormap, or NaN in the maps.
        TypeError: a label that is not a string.
    """
    _check_alpha(alpha)
    colormap_table(colormap)
    maps = _as_float_maps(heatmaps)
    label_texts = _check_labels(labels, len(maps))
    word_lists = _check_words(words, len(maps))
    score_texts = _format_scores(scores, len(maps))
    tile_size = _check_positive_int(tile_size, "tile_size", minimum=_MIN_TILE_SIZE)
    num_tiles = len(maps) + 1
    columns = _default_columns(num_tiles) if columns is None else _check_positive_int(columns, "columns")
    columns = min(columns, num_tiles)
    rows = math.ceil(num_tiles / columns)

    picture = _fit_to_square(_as_rgb(image), tile_size)
    tiles = [picture] + [overlay(picture, heatmap, alpha, colormap) for heatmap in maps]
    captions = [("image", None)] + list(zip(label_texts, score_texts, strict=True))

    font = _default_font(max(10, round(tile_size / 16)))
    line_height = _line_height(font)
    padding = max(4, tile_size // 32)
    cell_width = max(picture.width, (2 * tile_size) // 3)
    text_width = cell_width - padding
    wrapped = [_wrap(label, font, text_width, _MAX_LABEL_LINES) for label, _ in captions]
    if word_lists is not None:  # each map's caption: its words in lines, each word with its shade
        wrapped = wrapped[:1] + [_wrap_words(pairs, font, text_width, _MAX_LABEL_LINES) for pairs in word_lists]
    caption_lines = max(len(lines) for lines in wrapped) + (scores is not None)
    caption_height = caption_lines * line_height + padding
    cell_height = picture.height + caption_height
    colorbar_height = 2 * line_height + padding

    canvas = Image.new(
        "RGB",
        (columns * cell_width + (columns + 1) * padding, rows * cell_height + (rows + 1) * padding + colorbar_height),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    for index, (tile, lines, (_, score_text)) in enumerate(zip(tiles, wrapped, captions, strict=True)):
        left = padding + (index % columns) * (cell_width + padding)
        top = padding + (index // columns) * (cell_height + padding)
        tile_left = left + (cell_width - tile.width) // 2
        canvas.paste(tile, (tile_left, top))
        # A hairline frame keeps white or transparent pictures apart from the white background.
        draw.rectangle((tile_left - 1, top - 1, tile_left + tile.width, top + tile.height), outline=_FRAME_COLOR)
        caption_top = top + picture.height + padding // 2
        for line in lines:
            if isinstance(line, str):
                _draw_centered(draw, line, font, left, cell_width, caption_top, _TEXT_COLOR)
            else:
                _draw_shaded_words(draw, line, font, left, cell_width, caption_top, line_height)
            caption_top += line_height
        if score_text is not None:
            _draw_centered(draw, score_text, font, left, cell_width, caption_top, _SCORE_COLOR)
    _draw_colorbar(canvas, colormap, font, top=rows * (cell_height + padding) + padding, padding=padding)
    return canvas


def save_grid(
    path: str | os.PathLike,
    image: Image.Image | np.ndarray,
    heatmaps: MapLike,
    labels: str | Sequence[str],
    scores: Sequence[float] | MapLike | None = None,
    **kwargs,
) -> Path:
    """Write `grid_figure(image, heatmaps, labels, scores, **kwargs)` as a PNG file (whatever the suffix).

    With `words=` (per prompt, its (word, relevance) pairs) each prompt is written under its map with its words
    shaded by relevance.

    Args:
        path: the file to write; its folder must exist.
        image, heatmaps, labels, scores, kwargs: as in `grid_figure`.

    Returns:
        The path written.
    """
    path = Path(path)
    grid_figure(image, heatmaps, labels, scores, **kwargs).save(path, format="PNG")
    return path


# --- argument checks ---------------------------------------------------------------------------------------------
def _as_float_map(heatmap: MapLike, name: str = "heatmap") -> np.ndarray:
    """A [height, width] map as float32 clipped to [0, 1]."""
    values = _to_numpy(heatmap)
    if values.ndim != 2:
        raise ValueError(f"`{name}` must be a [height, width] map, got shape {tuple(values.shape)}.")
    return _check_values(values, name)


def _as_float_maps(heatmaps: MapLike) -> np.ndarray:
    """[prompts, height, width] maps (a [height, width] map is one prompt) as float32 clipped to [0, 1]."""
    values = _to_numpy(heatmaps)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(
            f"`heatmaps` must be the [prompts, height, width] maps of one image (e.g. `out.heatmaps[0]`), "
            f"got shape {tuple(values.shape)}."
        )
    if len(values) == 0:
        raise ValueError("`heatmaps` holds no maps.")
    return _check_values(values, "heatmaps")


def _to_numpy(heatmap: MapLike) -> np.ndarray:
    if isinstance(heatmap, torch.Tensor):
        return heatmap.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(heatmap, dtype=np.float32)


def _check_values(values: np.ndarray, name: str) -> np.ndarray:
    if values.shape[-1] == 0 or values.shape[-2] == 0:
        raise ValueError(f"`{name}` is empty: shape {tuple(values.shape)}.")
    if np.isnan(values).any():
        raise ValueError(f"`{name}` contains NaN values; maps must be numbers in [0, 1].")
    return np.ascontiguousarray(np.clip(values, 0.0, 1.0), dtype=np.float32)


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")


def _check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"`size` must be (width, height), got {size!r}.")
    return _check_positive_int(size[0], "size[0] (width)"), _check_positive_int(size[1], "size[1] (height)")


def _check_labels(labels: str | Sequence[str], count: int) -> list[str]:
    labels = [labels] if isinstance(labels, str) else list(labels)
    if len(labels) != count:
        raise ValueError(f"`labels` must hold one string per map ({count}), got {len(labels)}.")
    for label in labels:
        if not isinstance(label, str):
            raise TypeError(f"`labels` must be strings, got {type(label).__name__}: {label!r}.")
    return labels


def _format_scores(scores: Sequence[float] | MapLike | None, count: int) -> list[str | None]:
    if scores is None:
        return [None] * count
    values = _to_numpy(scores).reshape(-1)
    if len(values) != count:
        raise ValueError(f"`scores` must hold one number per map ({count}), got {len(values)}.")
    return [f"{value:.3f}" for value in values.tolist()]


def _default_columns(num_tiles: int) -> int:
    rows = math.ceil(num_tiles / _MAX_DEFAULT_COLUMNS)
    return math.ceil(num_tiles / rows)


# --- pixels ------------------------------------------------------------------------------------------------------
def _colorize_array(values: np.ndarray, colormap: str) -> np.ndarray:
    """[height, width] values in [0, 1] -> uint8 [height, width, 3] colours."""
    # The bin of v is floor(256 v), as matplotlib's Colormap does, with v = 1 in the last bin.
    indices = np.minimum((values * 256).astype(np.intp), 255)
    return colormap_table(colormap)[indices]


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float [height, width] map to size = (width, height)."""
    if (values.shape[1], values.shape[0]) == tuple(size):
        return values
    resized = np.asarray(Image.fromarray(values).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    # Bilinear weights are a convex combination, but float rounding may step out of [0, 1] by an ulp.
    return np.clip(resized, 0.0, 1.0)


def _as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Any PIL image (or uint8 array) as RGB, transparency composited over white."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(
                f"An array `image` must be uint8 [height, width] or [height, width, 3 or 4], got {image.dtype} "
                f"{tuple(image.shape)}."
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"`image` must be a PIL image or a uint8 array, got {type(image).__name__}.")
    return to_rgb(image)


def _fit_to_square(image: Image.Image, side: int) -> Image.Image:
    """The image scaled so that its longer side is `side`, aspect ratio kept."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


# --- text and colorbar -------------------------------------------------------------------------------------------
def _default_font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        # Pillow < 10.1 has no `size`, and a Pillow without FreeType has only its small bitmap font.
        return ImageFont.load_default()


def _ellipsis(font: Font) -> str:
    # The bitmap fallback font is Latin-1 only.
    return "\u2026" if isinstance(font, ImageFont.FreeTypeFont) else "..."


def _line_height(font: Font) -> int:
    bottom = font.getbbox("Hgjy|")[3]
    return int(bottom + max(2, bottom // 4))


def _wrap(text: str, font: Font, width: int, max_lines: int) -> list[str]:
    """`text` broken into at most `max_lines` lines of at most `width` pixels, the last one ellipsized if cut."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        # A word wider than a line is broken between characters.
        while font.getlength(word) > width and len(lines) <= max_lines:
            cut = _longest_fitting_prefix(word, font, width)
            lines.append(word[:cut])
            word = word[cut:]
        current = word
        if len(lines) > max_lines:
            break
    lines.append(current)
    if len(lines) <= max_lines:
        return lines
    return lines[: max_lines - 1] + [_ellipsize(lines[max_lines - 1], font, width)]


def _longest_fitting_prefix(word: str, font: Font, width: int) -> int:
    cut = 1
    while cut < len(word) and font.getlength(word[: cut + 1]) <= width:
        cut += 1
    return cut


def _ellipsize(line: str, font: Font, width: int) -> str:
    """`line` shortened until it fits in `width` pixels followed by an ellipsis (text follows it)."""
    ellipsis = _ellipsis(font)
    while line and font.getlength(line.rstrip() + ellipsis) > width:
        line = line[:-1]
    return line.rstrip() + ellipsis


def _check_words(words, count: int) -> list[list[tuple[str, float]]] | None:
    """`words` as one list of (word, shade in [0, 1]) per map, each relevance divided by its prompt's largest."""
    if words is None:
        return None
    words = list(words)
    if len(words) != count:
        raise ValueError(f"`words` must hold one list of (word, relevance) pairs per map ({count}), got {len(words)}.")
    shaded = []
    for pairs in words:
        pairs = [(str(word), float(value)) for word, value in pairs]
        if any(not math.isfinite(value) for _, value in pairs):
            raise ValueError("`words` holds a NaN or infinite relevance.")
        top = max((value for _, value in pairs), default=0.0)
        shaded.append([(word, max(0.0, value) / top if top > 0 else 0.0) for word, value in pairs])
    return shaded


def _wrap_words(pairs: list[tuple[str, float]], font: Font, width: int, max_lines: int) -> list:
    """(word, shade) pairs broken into at most `max_lines` lines of at most `width` pixels; "..." if cut."""
    lines: list[list[tuple[str, float]]] = [[]]
    space = font.getlength(" ")
    used = 0.0
    for word, shade in pairs:
        length = font.getlength(word)
        if lines[-1] and used + space + length > width:
            if len(lines) == max_lines:
                lines[-1].append(("...", 0.0))
                return lines
            lines.append([])
            used = 0.0
        used += (space if lines[-1] else 0.0) + length
        lines[-1].append((word, shade))
    return lines if lines[0] else [""]


def _draw_shaded_words(draw, line, font: Font, left: int, width: int, top: int, line_height: int) -> None:
    """One caption line of (word, shade) pairs, centered, each word on a box blended toward `_WORD_SHADE`."""
    space = font.getlength(" ")
    total = sum(font.getlength(word) for word, _ in line) + space * (len(line) - 1)
    x = left + (width - total) / 2
    for word, shade in line:
        length = font.getlength(word)
        if shade > 0:
            fill = tuple(round(255 + (channel - 255) * shade) for channel in _WORD_SHADE)
            draw.rectangle((x - 1, top, x + length + 1, top + line_height - 2), fill=fill)
        draw.text((x, top), word, font=font, fill=_TEXT_COLOR)
        x += length + space


def _draw_centered(draw: ImageDraw.ImageDraw, text: str, font: Font, left: int, width: int, top: int, fill) -> None:
    draw.text((left + (width - font.getlength(text)) / 2, top), text, font=font, fill=fill)


def _draw_colorbar(canvas: Image.Image, colormap: str, font: Font, top: int, padding: int) -> None:
    """A horizontal 0 .. 1 colorbar across the bottom of the canvas, ticks at 0, 0.5 and 1 under it."""
    draw = ImageDraw.Draw(canvas)
    tick_width = font.getlength("0.5")
    left = padding + math.ceil(tick_width / 2)
    width = canvas.width - 2 * left
    bar_height = max(6, _line_height(font) * 2 // 3)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None].repeat(bar_height, axis=0)
    canvas.paste(Image.fromarray(_colorize_array(ramp, colormap)), (left, top))
    draw.rectangle((left - 1, top - 1, left + width, top + bar_height), outline=_SCORE_COLOR)
    for fraction, text in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        x = left + round(fraction * (width - 1))
        draw.line((x, top + bar_height, x, top + bar_height + padding // 2), fill=_SCORE_COLOR)
        _draw_centered(draw, text, font, x, 0, top + bar_height + padding // 2, _SCORE_COLOR)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe version of a label: "a Red circle!" -> "a-red-circle"."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:limit] or "label"
