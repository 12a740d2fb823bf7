"""Reading user videos for a video model: one clip or several, each as a list of upright RGB frames.

A clip is anything `media.load_video` reads: a folder of frames, an animated image file, a list of frames (PIL
images, [H, W, C] arrays, paths) or one [frames, H, W, C] array; `videos` is one clip or a list of clips. In a
list, folders, animated image files (GIF, APNG, WebP, multi-page TIFF), encoded video files, lists and [frames, H,
W, C] arrays are clips, and PIL images, [H, W, C] arrays and still image files are frames (`is_one_clip`, which
the pipeline uses too); a list of both is refused. Each clip is read by `media.load_video` once, as a whole, so the
pixel scale of a float clip is decided for all its frames alike, and the model's processor then gets an
unambiguous batch: a list of clips, each a list of frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .media import VIDEO_FILE_SUFFIXES, VideoReadError, load_video

__all__ = ["as_videos", "is_one_clip"]


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
    if is_one_clip(videos):
        return [_clip(videos)]
    return [_clip(clip) for clip in videos]


def is_one_clip(videos) -> bool:
    """Whether a list is one clip's frames (True) or a list of clips (False), the rule of `as_videos`.

    Args:
        videos: anything; only a non-empty list or tuple can be one clip's frames.

    Raises:
        TypeError: a list that mixes clips (folders, animated image or video files, lists, [frames, H, W, C]
            arrays) and frames (PIL images, [H, W, C] arrays, still image files), or holds something that is
            neither.
    """
    if not isinstance(videos, (list, tuple)) or not videos:
        return False
    kinds = {_kind(item) for item in videos}
    if None in kinds:
        odd = next(item for item in videos if _kind(item) is None)
        described = f"a {odd.ndim}-D {type(odd).__name__}" if hasattr(odd, "ndim") else type(odd).__name__
        raise TypeError(
            f"`videos` holds {described}, which is neither a clip nor a frame: frames are PIL images, [height, width, "
            "channels] numpy arrays or image files; clips are lists of frames, [frames, height, width, channels] "
            "arrays or tensors, folders of frames or animated image files."
        )
    if kinds == {"frame"}:
        return True
    if kinds == {"clip"}:
        return False
    raise TypeError(
        "`videos` must be one clip (a list of frames: PIL images, [height, width, channels] arrays or still image "
        "files) or a list of clips (lists of frames, [frames, height, width, channels] arrays, folders of frames "
        "or animated image files such as GIFs), not a mix."
    )


def _kind(item) -> str | None:
    """ "clip", "frame" or None (neither) for one item of a list given as `videos`."""
    if isinstance(item, np.ndarray):
        return {2: "frame", 3: "frame", 4: "clip"}.get(item.ndim)
    if isinstance(item, torch.Tensor):  # a whole clip; frames as tensors are not read (`load_video` takes arrays)
        return "clip" if item.ndim == 4 else None
    if isinstance(item, (str, os.PathLike)):
        if not Path(item).exists():
            raise VideoReadError(f"{item}: no such file or folder (an item of `videos`).")
        return "clip" if _is_clip_file(Path(item)) else "frame"
    if isinstance(item, Image.Image):
        return "clip" if _is_animation(item) else "frame"
    return "clip" if isinstance(item, (list, tuple)) else None


def _is_clip_file(path: Path) -> bool:
    """A folder, an encoded video file (`load_video` says how to read it) or an image file with several frames;
    a missing or unreadable file counts as a frame, which `load_video` then reports."""
    if path.is_dir() or path.suffix.lower() in VIDEO_FILE_SUFFIXES:
        return True
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError):
        return False


def _is_frame(item) -> bool:
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return isinstance(item, (Image.Image, str, os.PathLike))


def _is_animation(item) -> bool:
    return isinstance(item, Image.Image) and getattr(item, "n_frames", 1) > 1


def _clip(frames) -> list[Image.Image]:
    """One clip read by `media.load_video` (a list of frames, an array, a folder or an animation)."""
    if isinstance(frames, (list, tuple, np.ndarray)):
        if len(frames) == 0:
            raise ValueError("a clip in `videos` has no frames.")
        if not isinstance(frames, np.ndarray) and not all(_is_frame(frame) for frame in frames):
            raise TypeError("a clip must hold frames: PIL images, [height, width, channels] arrays or image paths.")
    return load_video(frames)
