"""Reading user images: files, URLs, arrays and PIL images of any mode, as upright RGB.

Every entry point (the explainer's raw `images`, the pipeline, the command line, the pictures) goes through here,
so a CMYK JPEG, a 16-bit PNG, a palette GIF or an EXIF-rotated photo is handled the same way everywhere, and a file
that is not an image gives one clear error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Transparent pixels are composited over white, as image viewers show them.
BACKGROUND = (255, 255, 255)
#: File suffixes read as images (folders given to the command line are searched for these).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageReadError(ValueError):
    """An input that cannot be read as an image; the message names the input and the problem."""


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Any PIL image or image array as an RGB PIL image (transparency over white, 16-bit and float scaled).

    Arrays: [height, width] or [height, width, 1|3|4] (channels first [1|3|4, height, width] is accepted too);
    uint8 as they are, other numbers in [0, 1] scaled by 255, otherwise in [0, 255].
    """
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"an image must be a PIL image or a numpy array, got {type(image).__name__}")
    if image.mode == "La":
        image = _unpremultiply_la(image)
    elif image.mode.startswith("I;16"):
        # 16-bit pixels would be clipped at 255 by `convert`; keep their top 8 bits instead.
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F"):
        image = _stretch_to_uint8(image)
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as upright RGB (EXIF orientation applied; first frame of an animation).

    Raises:
        ImageReadError: the file is missing, not a file, not an image, or truncated/corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognized format)") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: too large to decode safely ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageReadError(f"{path}: unreadable image ({error})") from None


def load(image, timeout: float | None = None) -> Image.Image:
    """A PIL image, numpy array, local path, URL or base64 string as upright RGB."""
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        return to_rgb(image)
    if isinstance(image, os.PathLike) or (isinstance(image, str) and _looks_like_a_path(image)):
        return open_image(image)
    if isinstance(image, str):
        from transformers.image_utils import load_image

        try:
            return to_rgb(load_image(image, timeout=timeout))
        except Exception as error:  # transformers raises several types for bad sources; name the input
            shown = image if len(image) < 80 else image[:77] + "..."
            raise ImageReadError(f"{shown}: not a readable image path, URL or base64 image ({error})") from None
    raise TypeError(f"an image must be a PIL image, numpy array, path or URL, got {type(image).__name__}")


def _looks_like_a_path(text: str) -> bool:
    """A string that names a file (existing or not), rather than a URL or a base64-encoded image."""
    if text.startswith(("http://", "https://", "data:image/")):
        return False
    return os.path.exists(text) or os.sep in text or Path(text).suffix.lower() in IMAGE_SUFFIXES


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or array.size == 0:
        raise ValueError(f"an image array must be [height, width] or [height, width, 3|4], got {array.shape}")
    return Image.fromarray(np.ascontiguousarray(pixels_to_uint8(array)))


def pixels_to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8: uint8 as they are, booleans as 0/255, other numbers in [0, 1] scaled by 255, otherwise
    taken in [0, 255] (clipped); decided once for the whole array (all frames of a video alike).

    Raises:
        ValueError: the array holds something other than finite numbers.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError("an image array must hold finite numbers")
    scale = 255.0 if array.max() <= 1.0 and array.min() >= 0.0 else 1.0
    return np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _unpremultiply_la(image: Image.Image) -> Image.Image:
    # Pillow converts "La" (luminance premultiplied by alpha) to no other mode.
    luminance, alpha = np.moveaxis(np.asarray(image).astype(np.float32), -1, 0)
    straight = np.divide(luminance * 255, alpha, out=np.zeros_like(luminance), where=alpha > 0)
    return Image.fromarray(np.stack([np.clip(np.rint(straight), 0, 255), alpha], -1).astype(np.uint8), "LA")


def _stretch_to_uint8(image: Image.Image) -> Image.Image:
    # 32-bit integer and float images have no fixed range: used as they are within [0, 255], else stretched.
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        values = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(values).astype(np.uint8))
