"""Reading user videos for a video model: one clip or several, each as a list of upright RGB frames.

A clip is a list of frames (PIL images, [H, W, C] arrays, paths) or one [frames, H, W, C] array; `videos` is one clip
or a list of clips. Every frame goes through `images.load`, so frames of any mode are read the same way as images,
and the model's processor then gets an unambiguous batch: a list of clips, each a list of frames.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from .images import load

__all__ = ["as_videos"]


def as_videos(videos) -> list[list[Image.Image]]:
    """`videos` (one clip or a list of clips) as a list of clips, each a list of RGB PIL frames.

    Args:
        videos: a clip (a list of PIL images / [H, W, C] arrays / paths, or a [frames, H, W, C] array), a list of
            such clips, or a [videos, frames, H, W, C] array.

    Raises:
        TypeError: a tensor (model-ready tensors go to `pixel_values`) or something that is not a clip.
        ValueError: a single image, an empty clip or list, or an array of the wrong rank.
    """
    if isinstance(videos, torch.Tensor):
        raise TypeError(
            "`videos` takes frames (PIL images or arrays) for the processor; pass a model-ready tensor "
            "[batch, frames, channels, height, width] as `pixel_values=` instead."
        )
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
    if all(_is_frame(item) for item in videos):
        return [_clip(videos)]
    if all(isinstance(item, (list, tuple)) or (isinstance(item, np.ndarray) and item.ndim == 4) for item in videos):
        return [_clip(clip) for clip in videos]
    raise TypeError(
        "`videos` must be one clip (a list of frames: PIL images or [height, width, channels] arrays) or a list "
        "of clips, not a mix of both."
    )


def _is_frame(item) -> bool:
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return isinstance(item, (Image.Image, str, os.PathLike))


def _clip(frames) -> list[Image.Image]:
    if len(frames) == 0:
        raise ValueError("a clip in `videos` has no frames.")
    if not all(_is_frame(frame) for frame in frames):
        raise TypeError("a clip must hold frames: PIL images, [height, width, channels] arrays or image paths.")
    return [load(frame) for frame in frames]
