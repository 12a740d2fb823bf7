"""`transformers_legrad.visualize`: colormaps, overlays, grayscale maps and the labelled grid (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFont

from transformers_legrad.visualize import (
    COLORMAPS,
    _wrap,
    colorize,
    grid_figure,
    heatmap_image,
    overlay,
    save_grid,
)

GREEN = (0, 255, 0)
# Every mode Pillow can hold an image in; a few ("La", 16-bit, "I", "F") need more than `convert("RGB")`.
ALL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"]
ALL_MODES += ["I", "I;16", "I;16B", "I;16L", "I;16N", "F"]


def smooth_map(height: int = 24, width: int = 32, center: tuple[float, float] = (0.4, 0.6)) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    bump = np.exp(-(((rows / height - center[0]) ** 2) + ((cols / width - center[1]) ** 2)) / 0.05)
    return ((bump - bump.min()) / (bump.max() - bump.min())).astype(np.float32)


def noise_image(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def green_tiles(grid: Image.Image) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row and column runs of the pure-green tiles of a grid drawn from a green image with alpha 0."""
    green = (np.asarray(grid) == GREEN).all(axis=-1)
    row_runs, column_runs = runs(green.any(axis=1)), runs(green.any(axis=0))
    return row_runs, column_runs


# --- colorize ----------------------------------------------------------------------------------------------------
def test_colorize_mode_size_and_input_types():
    heatmap = smooth_map(7, 11)
    image = colorize(heatmap)
    assert image.mode == "RGB" and image.size == (11, 7)
    from_tensor = colorize(torch.from_numpy(heatmap).double().requires_grad_())
    assert np.array_equal(np.asarray(image), np.asarray(from_tensor))
    assert np.array_equal(np.asarray(colorize(heatmap.tolist())), np.asarray(image))


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_colormap_endpoints_and_clipping(name):
    table = COLORMAPS[name]
    assert table.shape == (256, 3) and table.dtype == np.uint8
    values = np.array([[0.0, 1.0, -3.0, 7.0, -np.inf, np.inf]])
    colors = np.asarray(colorize(values, name))[0]
    assert np.array_equal(colors, np.stack([table[0], table[-1]] * 3))


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_value_i_over_255_takes_row_i(name):
    colors = np.asarray(colorize(np.arange(256)[None] / 255, name))[0]
    assert np.array_equal(colors, COLORMAPS[name])


def test_inferno_luminance_increases_monotonically():
    srgb = COLORMAPS["inferno"] / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luminance) > 0).all()


def test_tables_are_read_only():
    with pytest.raises(ValueError):
        COLORMAPS["inferno"][0, 0] = 1


@pytest.mark.parametrize("name", ["inferno", "viridis", "turbo"])
def test_tables_match_matplotlib(name):
    colormaps = pytest.importorskip("matplotlib").colormaps
    values = np.arange(256) / 255
    expected = np.rint(colormaps[name](values)[:, :3] * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(colorize(values[None], name))[0], expected)


def test_jet_matches_opencv_as_the_authors_use_it():
    cv2 = pytest.importorskip("cv2")
    levels = np.arange(256, dtype=np.uint8)[None]
    expected = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[0][:, ::-1]
    assert np.array_equal(np.asarray(colorize(levels / 255, "jet"))[0], expected)


def test_unknown_colormap():
    with pytest.raises(ValueError, match="colormap"):
        colorize(smooth_map(), "hot")
    with pytest.raises(ValueError, match="colormap"):
        overlay(noise_image(), smooth_map(), colormap="Inferno")


# --- overlay -----------------------------------------------------------------------------------------------------
def test_overlay_alpha_endpoints():
    image, heatmap = noise_image(32, 24), smooth_map(24, 32)
    assert np.array_equal(np.asarray(overlay(image, heatmap, alpha=0.0)), np.asarray(image))
    for name in COLORMAPS:
        blended = overlay(image, heatmap, alpha=1.0, colormap=name)
        assert np.array_equal(np.asarray(blended), np.asarray(colorize(heatmap, name)))


def test_overlay_half_alpha_is_the_mean():
    image, heatmap = noise_image(32, 24), smooth_map(24, 32)
    expected = (np.asarray(image, dtype=float) + np.asarray(colorize(heatmap), dtype=float)) / 2
    assert np.abs(np.asarray(overlay(image, heatmap, alpha=0.5), dtype=float) - expected).max() <= 1


def test_overlay_resizes_the_map_to_the_image():
    image = noise_image(64, 40)
    blended = overlay(image, torch.rand(224, 224), alpha=0.3)
    assert blended.mode == "RGB" and blended.size == (64, 40)
    # A map that is 1 everywhere becomes the colormap's last colour everywhere, at any size.
    full = np.asarray(overlay(image, np.ones((7, 7)), alpha=1.0))
    assert (full == COLORMAPS["inferno"][-1]).all()


def test_overlay_accepts_uint8_arrays():
    pixels = np.asarray(noise_image(20, 10))
    assert overlay(pixels, smooth_map(5, 5)).size == (20, 10)
    assert overlay(pixels[..., 0], smooth_map(5, 5)).size == (20, 10)
    with pytest.raises(ValueError, match="uint8"):
        overlay(pixels.astype(np.float32), smooth_map(5, 5))
    with pytest.raises(TypeError, match="image"):
        overlay("cat.png", smooth_map(5, 5))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_image_mode(mode):
    if mode == "La":
        image = Image.new("LA", (20, 12), (100, 128)).convert("La")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        image = Image.new(mode, (20, 12), 40000 if mode != "F" else 3.5e4)
    else:
        image = noise_image(20, 12).convert(mode)
    assert image.mode == mode
    blended = overlay(image, smooth_map(6, 6), alpha=0.0)
    assert blended.mode == "RGB" and blended.size == (20, 12)
    if mode.startswith("I;16"):
        # 16-bit grey 40000 is 156 in 8 bits, not clipped to white.
        assert blended.getpixel((0, 0)) == (156, 156, 156)
    if mode == "La":
        # Grey 100 at alpha 128/255 over white is 177.2, up to the rounding of the premultiplied pixel.
        assert all(abs(channel - 177) <= 1 for channel in blended.getpixel((0, 0)))
    assert grid_figure(image, smooth_map(6, 6)[None], ["x"], tile_size=32).mode == "RGB"


def test_transparency_is_composited_over_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(overlay(image, np.zeros((8, 8)), alpha=0.0)).min() == 255
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    assert np.asarray(overlay(palette, np.zeros((8, 8)), alpha=0.0)).min() == 255


# --- heatmap_image -----------------------------------------------------------------------------------------------
def test_heatmap_image_mode_and_values():
    heatmap = smooth_map(9, 13)
    gray = heatmap_image(heatmap)
    assert gray.mode == "L" and gray.size == (13, 9)
    assert np.array_equal(np.asarray(gray), np.rint(heatmap * 255).astype(np.uint8))


def test_heatmap_image_resizes_the_float_map():
    heatmap = smooth_map(12, 16)
    gray = heatmap_image(torch.from_numpy(heatmap), size=(48, 36))
    assert gray.mode == "L" and gray.size == (48, 36)
    # Upsampling is bilinear over the float values (torch's align_corners=False), quantized once at the end.
    reference = F.interpolate(torch.from_numpy(heatmap)[None, None], size=(36, 48), mode="bilinear")[0, 0]
    assert np.abs(np.asarray(gray, dtype=float) - np.rint(reference.numpy() * 255)).max() <= 1


@pytest.mark.parametrize("size", [(0, 4), (4,), (4.0, 4), "44", (True, 4)])
def test_heatmap_image_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        heatmap_image(smooth_map(), size=size)


# --- errors ------------------------------------------------------------------------------------------------------
def test_nan_raises():
    heatmap = smooth_map()
    heatmap[3, 4] = np.nan
    for call in (
        lambda: colorize(heatmap),
        lambda: overlay(noise_image(), heatmap),
        lambda: heatmap_image(torch.from_numpy(heatmap)),
        lambda: grid_figure(noise_image(), heatmap[None], ["a"]),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), True, "0.5", None])
def test_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        overlay(noise_image(), smooth_map(), alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        grid_figure(noise_image(), smooth_map()[None], ["a"], alpha=alpha)


@pytest.mark.parametrize("shape", [(5,), (1, 5, 5), (0, 5)])
def test_single_map_shape_is_checked(shape):
    with pytest.raises(ValueError, match="heatmap"):
        colorize(np.zeros(shape))


def test_grid_arguments_are_checked():
    image, maps = noise_image(), np.stack([smooth_map(), smooth_map()])
    with pytest.raises(ValueError, match=r"out\.heatmaps\[0\]"):
        grid_figure(image, maps[None], ["a", "b"])
    with pytest.raises(ValueError, match="no maps"):
        grid_figure(image, maps[:0], [])
    with pytest.raises(ValueError, match="labels"):
        grid_figure(image, maps, ["a"])
    with pytest.raises(TypeError, match="labels"):
        grid_figure(image, maps, [["a", "b"], ["c", "d"]])
    with pytest.raises(ValueError, match="scores"):
        grid_figure(image, maps, ["a", "b"], scores=[0.5])
    with pytest.raises(ValueError, match="columns"):
        grid_figure(image, maps, ["a", "b"], columns=0)
    with pytest.raises(ValueError, match="tile_size"):
        grid_figure(image, maps, ["a", "b"], tile_size=8)


# --- grid --------------------------------------------------------------------------------------------------------
LONG_LABELS = [
    "a photograph of a small red disc lying next to a large blue square on a noisy grey background at dusk",
    "Supercalifragilisticexpialidocious_without_a_single_space_anywhere_in_this_very_long_label",
    "a cat",
    "",
    "an equally long description of a scene that will never fit on two lines of a caption strip of a tile",
]


@pytest.mark.parametrize("num_maps, expected_columns", [(1, 2), (5, 3)])
def test_grid_tiles(num_maps, expected_columns):
    image = Image.new("RGB", (300, 150), GREEN)
    maps = torch.rand(num_maps, 224, 224)
    labels = LONG_LABELS[:num_maps]
    grid = grid_figure(image, maps, labels, scores=torch.rand(num_maps) * 30, alpha=0.0, tile_size=128)
    assert grid.mode == "RGB"
    row_runs, column_runs = green_tiles(grid)
    assert len(column_runs) == expected_columns
    assert len(row_runs) == -(-(num_maps + 1) // expected_columns)
    # Every tile is the image scaled to a 128 px long side, aspect ratio kept (300 x 150 -> 128 x 64).
    assert {stop - start for start, stop in column_runs} == {128}
    assert {stop - start for start, stop in row_runs} == {64}
    green = (np.asarray(grid) == GREEN).all(axis=-1)
    full_tiles = [(rows, cols) for rows in row_runs for cols in column_runs if green[slice(*rows), slice(*cols)].all()]
    assert len(full_tiles) == num_maps + 1
    # Captions stay inside their cells: the gutters between tile columns (inside the tiles' frames) are blank
    # below the tiles, however long the labels.
    pixels = np.asarray(grid)
    below_tiles = row_runs[-1][1] + 1
    colorbar_top = below_tiles + int(np.flatnonzero((pixels[below_tiles:] != 255).any(-1).mean(-1) > 0.9)[0])
    for (_, left_stop), (right_start, _) in zip(column_runs, column_runs[1:], strict=False):
        gutter = pixels[:colorbar_top, left_stop + 1 : right_start - 1]
        assert gutter.size and (gutter == 255).all()


def test_grid_columns_and_single_map():
    image = Image.new("RGB", (100, 200), GREEN)
    grid = grid_figure(image, torch.rand(3, 16, 16), ["a", "b", "c"], alpha=0.0, columns=1, tile_size=64)
    row_runs, column_runs = green_tiles(grid)
    assert len(row_runs) == 4 and len(column_runs) == 1
    assert [stop - start for start, stop in row_runs] == [64] * 4
    assert column_runs[0][1] - column_runs[0][0] == 32
    # A single [h, w] map and a single string are one prompt.
    row_runs, column_runs = green_tiles(grid_figure(image, torch.rand(16, 16), "a", alpha=0.0, tile_size=64))
    assert len(row_runs) == 1 and len(column_runs) == 2


def test_wrapped_captions_fit_and_are_ellipsized():
    font = ImageFont.load_default(size=16)
    for label in LONG_LABELS:
        lines = _wrap(label, font, width=120, max_lines=2)
        assert 1 <= len(lines) <= 2
        assert all(font.getlength(line) <= 120 for line in lines)
    assert _wrap(LONG_LABELS[0], font, width=120, max_lines=2)[-1].endswith("\u2026")
    assert _wrap("a cat", font, width=120, max_lines=2) == ["a cat"]
    assert _wrap("a very long", font, width=1, max_lines=2)[-1].endswith("\u2026")


def test_save_grid_writes_a_png(tmp_path):
    image, maps = noise_image(60, 40), np.stack([smooth_map(), smooth_map(center=(0.7, 0.2))])
    path = save_grid(tmp_path / "grid.png", image, maps, ["a red disc", "a blue square"], scores=[0.873, 0.1])
    assert path == tmp_path / "grid.png"
    with Image.open(path) as reopened:
        assert reopened.format == "PNG"
        expected = grid_figure(image, maps, ["a red disc", "a blue square"], scores=[0.873, 0.1])
        assert reopened.size == expected.size
        assert np.array_equal(np.asarray(reopened.convert("RGB")), np.asarray(expected))
