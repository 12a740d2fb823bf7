"""Reading user videos and audio clips: frames as RGB PIL images, waveforms as mono float32 at the model's rate.

A video is a folder of frame images (taken in natural order: ``frame2`` before ``frame10``), an animated image
file (GIF, APNG, WebP), a list of frames (PIL images, arrays or paths) or a [frames, height, width, channels]
array; `sample_frames` then picks the number of frames a video model takes, uniformly, by the rule of
transformers' video processors. Encoded video files (MP4, ...) are not decoded here: extract their frames first.

An audio clip is a file read with `soundfile` (the optional extra ``transformers-legrad[audio]``) or a waveform
array with its sampling rate; channels are averaged to mono and, when the feature extractor expects another rate,
the clip is resampled with `soxr` as `transformers.audio_utils.load_audio` does (the same samples).

Example:
    >>> from transformers_legrad.media import load_audio, load_video, sample_frames
    >>> frames = sample_frames(load_video("clip_frames/"), model.config.num_frames)
    >>> waveform, rate = load_audio("clip.wav", target_rate=feature_extractor.sampling_rate)
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
from PIL import Image, ImageSequence, UnidentifiedImageError

from . import images
from .images import IMAGE_SUFFIXES

__all__ = ["AudioReadError", "VideoReadError", "load_audio", "load_video", "natural_sort_key", "sample_frames"]

#: Suffixes of encoded videos, refused with a hint to extract their frames.
VIDEO_FILE_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
_AUDIO_EXTRA = 'pip install "transformers-legrad[audio]"'


class VideoReadError(ValueError):
    """An input that cannot be read as a video; the message names the input and the problem."""


class AudioReadError(ValueError):
    """An input that cannot be read as an audio clip; the message names the input and the problem."""


# --- video -------------------------------------------------------------------------------------------------------
def load_video(source) -> list[Image.Image]:
    """Read a video as its RGB frames.

    Args:
        source: one of
            - a folder of frame images (files with an `IMAGE_SUFFIXES` suffix, hidden files and subfolders
              ignored), in natural order of their names (``frame2.png`` before ``frame10.png``);
            - an image file: every frame of an animation (GIF, APNG, WebP, multi-page TIFF), one for a still;
            - a list of frames, each a PIL image, an image array or a path (arrays of one shape scaled as one
              array, below);
            - an array or tensor [frames, height, width, channels] (or [frames, channels, height, width]) with
              1, 3 or 4 channels: uint8 as it is, other numbers in [0, 1] scaled by 255, otherwise in [0, 255];
            - an opened PIL image with several frames.

    Returns:
        The frames, upright RGB PIL images all of one size (transparency over white, as `images.to_rgb`).

    Raises:
        VideoReadError: a missing path, an empty folder, a folder without frame images, an encoded video file,
            an unreadable file, no frames, or frames of different sizes.
        ImageReadError: a frame file that is not a readable image.
        TypeError: a source of another kind.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        frames = _read_frame_folder(path) if path.is_dir() else _read_animation(path)
    elif isinstance(source, torch.Tensor):
        frames = _frames_from_array(source.detach().cpu().numpy())
    elif isinstance(source, np.ndarray):
        frames = _frames_from_array(source)
    elif isinstance(source, Image.Image):
        frames = [images.to_rgb(frame.copy()) for frame in ImageSequence.Iterator(source)]
    elif isinstance(source, Sequence):
        if len(source) == 0:
            raise VideoReadError("the list of frames is empty: give at least one frame")
        frames = _frames_from_list(source)
    else:
        raise TypeError(
            "a video must be a folder of frames, an animated image file, a list of frames or a "
            f"[frames, height, width, channels] array, got {type(source).__name__}"
        )
    _check_same_size(frames)
    return frames


def sample_frames(frames: Sequence | np.ndarray | torch.Tensor, num_frames: int) -> list | np.ndarray | torch.Tensor:
    """The `num_frames` frames a video model takes, spread uniformly over the clip.

    The rule of transformers' video processors (`transformers.video_utils.default_sample_indices_fn`, used by the
    video-classification pipeline with ``num_frames``): frame ``i * total // num_frames`` for i = 0 .. num_frames
    - 1, so the first frame is always taken and the clip is covered end to end.

    Args:
        frames: the clip's frames: a list (e.g. from `load_video`) or an array/tensor indexed by frame first.
        num_frames: the number the model takes (``model.config.num_frames``: 16 for VideoMAE, 32 for ViViT).

    Returns:
        The chosen frames in order: a list for a list, an array or tensor [num_frames, ...] for one.

    Raises:
        ValueError: `num_frames` is not a positive integer, or the clip has fewer frames than that.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, numbers.Integral) or num_frames < 1:
        raise ValueError(f"`num_frames` must be a positive integer, got {num_frames!r}")
    total = len(frames)
    if num_frames > total:
        raise ValueError(
            f"the model takes {num_frames} frames but the clip has {total}: give a longer clip (frames are "
            "not repeated, as transformers' video processors refuse it too)"
        )
    indices = np.arange(int(num_frames), dtype=np.int64) * total // int(num_frames)
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        return frames[indices]
    return [frames[index] for index in indices.tolist()]


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders the digits of a name as numbers: "frame2" < "frame10" (case ignored, then exact)."""
    # re.split with a group alternates text and digits, text first, so the parts compare position by position.
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if index % 2 else part.casefold() for index, part in enumerate(parts)), name


def _read_frame_folder(folder: Path) -> list[Image.Image]:
    files = [path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")]
    if not files:
        raise VideoReadError(f"{folder}: empty folder, no frame images in it")
    frame_files = sorted(
        (path for path in files if path.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_sort_key(p.name)
    )
    if not frame_files:
        shown = ", ".join(sorted(path.name for path in files)[:3]) + (", ..." if len(files) > 3 else "")
        raise VideoReadError(
            f"{folder}: no frame images in it ({len(files)} other files: {shown}); frames are files ending in "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return [images.open_image(path) for path in frame_files]


def _read_animation(path: Path) -> list[Image.Image]:
    if not path.exists():
        raise VideoReadError(f"{path}: no such file or folder")
    if not path.is_file():
        raise VideoReadError(f"{path}: not a file or folder")
    if path.suffix.lower() in VIDEO_FILE_SUFFIXES:
        raise VideoReadError(
            f"{path}: encoded video files are not decoded here; extract the frames to a folder first (e.g. "
            f"`ffmpeg -i {path.name} frames/%05d.png`) and give the folder, or pass the decoded frames as a "
            "[frames, height, width, 3] array"
        )
    try:
        with Image.open(path) as animation:
            return [images.to_rgb(frame.copy()) for frame in ImageSequence.Iterator(animation)]
    except UnidentifiedImageError:
        raise VideoReadError(f"{path}: not an image or animation (unrecognized format)") from None
    except Image.DecompressionBombError as error:
        raise VideoReadError(f"{path}: too large to decode safely ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise VideoReadError(f"{path}: unreadable animation ({error})") from None


def _frames_from_list(frames: Sequence) -> list[Image.Image]:
    """Each frame read as an image; arrays of one shape stacked first, so that one pixel scale holds for all."""
    if all(isinstance(frame, np.ndarray) for frame in frames) and len({frame.shape for frame in frames}) == 1:
        return _frames_from_pixels(np.stack(frames))
    return [images.load(frame) for frame in frames]


def _frames_from_array(array: np.ndarray) -> list[Image.Image]:
    if array.ndim != 4 or array.shape[0] == 0:
        hint = " (one image: add a frame axis, `array[None]`)" if array.ndim == 3 else ""
        raise VideoReadError(
            f"a video array must be [frames, height, width, channels] with at least one frame, got shape "
            f"{tuple(array.shape)}{hint}"
        )
    return _frames_from_pixels(array)


def _frames_from_pixels(array: np.ndarray) -> list[Image.Image]:
    """[frames, ...] pixel values as RGB frames, the pixel scale decided once for the whole clip."""
    try:
        pixels = images.pixels_to_uint8(array)
    except ValueError as error:
        raise VideoReadError(f"a video array must hold finite numbers ({error})") from None
    try:
        return [images.to_rgb(frame) for frame in pixels]
    except ValueError as error:
        raise VideoReadError(f"video array of shape {tuple(array.shape)}: {error}") from None


def _check_same_size(frames: list[Image.Image]) -> None:
    if not frames:
        raise VideoReadError("the video has no frames")
    for index, frame in enumerate(frames):
        if frame.size != frames[0].size:
            raise VideoReadError(
                f"all frames of a video must have one size: frame 0 is {frames[0].size[0]}x{frames[0].size[1]}, "
                f"frame {index} is {frame.size[0]}x{frame.size[1]} (width x height)"
            )


# --- audio -------------------------------------------------------------------------------------------------------
def load_audio(
    audio: str | os.PathLike | np.ndarray | torch.Tensor,
    sampling_rate: int | None = None,
    target_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read an audio clip as a mono float32 waveform, at the feature extractor's rate when one is given.

    Args:
        audio: a file soundfile reads (WAV, FLAC, OGG, MP3, ...; needs ``transformers-legrad[audio]``), or a
            waveform array/tensor [samples] or [samples, channels] / [channels, samples] (the shorter axis is
            the channels); floats as they are (nominally in [-1, 1]), signed integers divided by their range
            (int16 by 32768).
        sampling_rate: the rate of an array, in Hz; for a file it is read from the file (if given, it must match).
            An array without it is taken at `target_rate`, as transformers' audio pipelines take raw arrays.
        target_rate: the rate the model's feature extractor expects (``feature_extractor.sampling_rate``); a clip
            at another rate is resampled with soxr (``soxr_hq``, as `transformers.audio_utils.load_audio`).
            None keeps the clip's rate.

    Returns:
        (waveform [samples] float32, its sampling rate in Hz); channels averaged to mono.

    Raises:
        AudioReadError: a missing or unreadable file, an empty clip, NaN or infinite samples, a bad array shape.
        ValueError: a bad or missing sampling rate, or a rate mismatch without soxr installed.
        ImportError: a file given without soundfile installed.
        TypeError: an input of another kind.
    """
    target_rate = None if target_rate is None else _check_rate(target_rate, "target_rate")
    if isinstance(audio, (str, os.PathLike)):
        where = str(audio)
        waveform, rate = _read_audio_file(Path(audio))
        if sampling_rate is not None and _check_rate(sampling_rate, "sampling_rate") != rate:
            raise ValueError(
                f"{where}: the file is at {rate} Hz but sampling_rate={sampling_rate} was given; a file's rate is "
                "read from the file, leave sampling_rate out"
            )
    elif isinstance(audio, (np.ndarray, torch.Tensor)):
        where = "the waveform"
        waveform = _waveform_from_array(audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else audio)
        rate = _array_rate(sampling_rate, target_rate)
    else:
        raise TypeError(f"audio must be a file path or a waveform array, got {type(audio).__name__}")
    _check_samples(waveform, where)
    if target_rate is not None and rate != target_rate:
        waveform, rate = _resample(waveform, rate, target_rate), target_rate
    return np.ascontiguousarray(waveform, dtype=np.float32), rate


def _read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists():
        raise AudioReadError(f"{path}: no such file")
    if not path.is_file():
        raise AudioReadError(f"{path}: not a file")
    soundfile = _import_soundfile()
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    except (RuntimeError, OSError, ValueError, TypeError, EOFError) as error:  # LibsndfileError is a RuntimeError
        raise AudioReadError(
            f"{path}: unreadable audio ({error}); soundfile reads WAV, FLAC, OGG/Vorbis, MP3 and the other "
            "libsndfile formats"
        ) from None
    return samples.mean(axis=1), int(rate)


def _import_soundfile():
    try:
        import soundfile
    except (ImportError, OSError) as error:  # OSError: the package without its libsndfile library
        raise ImportError(
            f"reading audio files needs soundfile, which is not installed or not usable ({error}): {_AUDIO_EXTRA}, "
            "or pass the waveform as an array with its sampling_rate"
        ) from None
    return soundfile


def _waveform_from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"a waveform must hold real numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.unsignedinteger):
        raise TypeError(f"a waveform of unsigned integers ({array.dtype}) has no agreed zero; convert it to float")
    if np.issubdtype(array.dtype, np.signedinteger):
        array = array.astype(np.float64) / -np.iinfo(array.dtype).min
    if array.size == 0:
        raise AudioReadError(f"the waveform has no samples (0-length, shape {tuple(array.shape)})")
    if array.ndim == 2:
        array = array.mean(axis=1 if array.shape[1] <= array.shape[0] else 0)  # the shorter axis is the channels
    elif array.ndim != 1:
        raise AudioReadError(f"a waveform must be [samples] or [samples, channels], got shape {tuple(array.shape)}")
    return array.astype(np.float32, copy=False)


def _array_rate(sampling_rate: int | None, target_rate: int | None) -> int:
    if sampling_rate is not None:
        return _check_rate(sampling_rate, "sampling_rate")
    if target_rate is None:
        raise ValueError(
            "a waveform array needs its sampling_rate (in Hz), e.g. load_audio(array, sampling_rate=16000)"
        )
    return target_rate


def _check_rate(rate: int, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not rate > 0 or rate != int(rate):
        raise ValueError(f"`{name}` must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _check_samples(waveform: np.ndarray, where: str) -> None:
    if waveform.size == 0:
        raise AudioReadError(f"{where}: the clip has no samples (0-length waveform)")
    finite = np.isfinite(waveform)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        kind = "NaN" if np.isnan(waveform[bad]) else "infinite"
        raise AudioReadError(f"{where}: {int((~finite).sum())} samples are NaN or infinite (first: {kind} at {bad})")


def _resample(waveform: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """The clip at `target_rate`: soxr's high-quality resampler, length ceil(samples * target / rate), as
    `transformers.audio_utils.load_audio` (and librosa.load) make it."""
    try:
        import soxr
    except ImportError:
        raise ValueError(
            f"the clip is at {rate} Hz but the feature extractor expects {target_rate} Hz, and soxr (the resampler "
            f"transformers uses) is not installed: {_AUDIO_EXTRA}, or resample the clip to {target_rate} Hz"
        ) from None
    length = math.ceil(len(waveform) * target_rate / rate)
    resampled = soxr.resample(waveform.astype(np.float32, copy=False), rate, target_rate, quality="soxr_hq")
    return np.pad(resampled, (0, max(0, length - len(resampled))))[:length]
