"""Reading user videos for a video model: one clip or several, each as a list of upright RGB frames.

A clip is anything `media.load_video` reads: a folder of frames, an animated image file, a list of frames (PIL
images, [H, W, C] arrays, paths) or one [frames, H, W, C] array; `videos` is one clip or a list of clips. Each clip
is read by `media.load_video` once, as a whole, so the pixel scale of a float clip is decided for all its frames
alike, and the model's processor then gets an unambiguous batch: a list of clips, each a list of frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .media import load_video

__all__ = ["as_videos"]


def as_videos(videos) -> list[list[Image.Image]]:
    """`videos` (one clip or a list of clips) as a list of clips, each a list of RGB PIL frames.

    Args:
        videos: a clip (a folder of frames or an animated image file as a path, a list of PIL images / [H, W, C]
            arrays / frame paths, or a [frames, H, W, C] array), a list of such clips (folders among them), or a
            [videos, frames, H, W, C] array.

    Raises:
        TypeError: a tensor (model-ready tensors go to `pixel_values`) or something that is not a clip.
        ValueError: a single image, an empty clip or list, or an array of the wrong rank (`media.VideoReadError`
            for a path or array that is not a readable video).
    """
    if isinstance(videos, torch.Tensor):
        raise TypeError(
            "`videos` takes frames (PIL images or arrays) for the processor; pass a model-ready tensor "
            "[batch, frames, channels, height, width] as `pixel_values=` instead."
        )
    if isinstance(videos, (str, os.PathLike)) or _is_animation(videos):
        return [load_video(videos)]
    if isinstance(videos, np.ndarray):
        if videos.ndim == 4:
            return [_clip(videos)]
        if videos.ndim == 5:
            return [_clip(clip) for clip in videos]
        raise ValueError(
            f"a video array must be [frames, height, width, channels] (or [videos, frames, ...]), got shape "
            f"{videos.shape}; one image [height, width, channels] is not a video."
        )
    if _is_frame(videos):
        raise ValueError(
            "`videos` got one image, not a video: a video is a list of frames (or a [frames, height, width, "
            "channels] array); give the model's number of frames."
        )
    if not isinstance(videos, (list, tuple)):
        raise TypeError(f"`videos` must be a list of frames or a list of clips, got {type(videos).__name__}.")
    if not videos:
        raise ValueError("`videos` is empty; give at least one clip (a list of frames).")
    if all(_is_clip(item) for item in videos):
        return [_clip(clip) for clip in videos]
    if all(_is_frame(item) for item in videos):
        return [_clip(videos)]
    raise TypeError(
        "`videos` must be one clip (a list of frames: PIL images or [height, width, channels] arrays) or a list "
        "of clips (lists of frames, [frames, height, width, channels] arrays or folders of frames), not a mix."
    )


def _is_frame(item) -> bool:
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return isinstance(item, (Image.Image, str, os.PathLike))


def _is_animation(item) -> bool:
    return isinstance(item, Image.Image) and getattr(item, "n_frames", 1) > 1


def _is_clip(item) -> bool:
    if isinstance(item, np.ndarray):
        return item.ndim == 4
    if isinstance(item, (str, os.PathLike)):
        return Path(item).is_dir()
    return isinstance(item, (list, tuple)) or _is_animation(item)


def _clip(frames) -> list[Image.Image]:
    """One clip read by `media.load_video` (a list of frames, an array, a folder or an animation)."""
    if isinstance(frames, (list, tuple, np.ndarray)):
        if len(frames) == 0:
            raise ValueError("a clip in `videos` has no frames.")
        if not isinstance(frames, np.ndarray) and not all(_is_frame(frame) for frame in frames):
            raise TypeError("a clip must hold frames: PIL images, [height, width, channels] arrays or image paths.")
    return load_video(frames)
