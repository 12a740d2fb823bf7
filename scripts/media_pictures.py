"""Draw the README's video and audio pictures, deterministically, from the known-answer models the tests construct.

    python scripts/media_pictures.py                 # writes the three pictures into docs/
    python scripts/media_pictures.py --out pictures  # anywhere else

Both models are hand-built, not trained, so that the right answer is known (tests/tiny_video.py and
tests/tiny_audio.py say how their weights are set):

- video: `tiny_video.brightness_vivit`, a 2-block `VivitForVideoClassification` (8 frames of 48 x 48, tubelets of
  2 frames x 8 x 8 pixels) whose class 0 reads tubelet brightness, on `tiny_video.moving_square`'s clip, a square
  as bright as the brightest noise stepping one patch every tubelet. Frames go through `explain(videos=...)` as
  uint8 pictures, with a `VivitImageProcessor` that only rescales them to the model's [-1, 1]. Written:
  `legrad_video_strip.png` (`video_strip`, each frame captioned with whether its map peaks on the square) and
  `legrad_video.gif` (`save_video_gif`).
- audio: `tiny_audio.make_tone_detector`, a 1-block `ASTForAudioClassification` whose "tone" logit grows with its
  patches' energy, on a 975 ms clip of noise with a 150 ms 1 kHz tone burst at 0.40 s, through
  `explain(audio=..., sampling_rate=...)`. Written: `legrad_audio_spectrogram.png` (`spectrogram_figure`: the
  extractor's log-mel features with the map over them and `out.relevance_over_time()` under them).

The same command gives the same pictures (seeded clips, fixed weights, no training). It prints what the pictured
clips measure: the frames whose map peaks on the square, and the time of the relevance peak against the burst's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the known-answer models live with the tests that check them

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import VivitImageProcessor  # noqa: E402

from transformers_legrad import LeGradExplainer  # noqa: E402
from transformers_legrad.visualize_media import save_video_gif, spectrogram_figure, video_strip  # noqa: E402

import tiny_audio  # noqa: E402
import tiny_video  # noqa: E402

DEFAULT_OUT = ROOT / "docs"
VIDEO_STRIP, VIDEO_GIF, AUDIO_FIGURE = "legrad_video_strip.png", "legrad_video.gif", "legrad_audio_spectrogram.png"
VIDEO_SEED = 5  # one of the clips of the test (seeds 0-7): a diagonal across the middle
#: The pictured tone burst: start and duration in seconds, frequency in Hz, noise std, noise seed.
BURST_START, BURST_DURATION, BURST_FREQUENCY, NOISE_LEVEL, NOISE_SEED = 0.40, 0.15, 1000.0, 0.05, 1


def video_pictures(out: Path) -> dict:
    """The moving square's strip and GIF in `out`; returns the frames whose map peaks on the square."""
    clip, positions = tiny_video.moving_square(VIDEO_SEED)  # [frames, 3, H, W] in [-1, 1]
    pixels = np.rint((clip.numpy().transpose(0, 2, 3, 1) + 1.0) * 127.5).astype(np.uint8)
    frames = [Image.fromarray(frame) for frame in pixels]
    # The model takes [-1, 1]: ViViT's processor rescales by 1 / 127.5 with offset; the frames are its size already.
    processor = VivitImageProcessor(do_resize=False, do_center_crop=False, do_normalize=False)
    out_maps = LeGradExplainer(tiny_video.brightness_vivit(), processor).explain(videos=frames, targets=[0])
    heatmaps = out_maps.heatmaps[0, 0]  # [frames, H, W]
    hits = [_peak_cell(heatmap) == position for heatmap, position in zip(heatmaps, positions, strict=True)]
    captions = [f"{index}: {'on square' if hit else 'off'}" for index, hit in enumerate(hits)]
    strip = video_strip(
        frames,
        heatmaps,
        label="class 0 of a hand-built ViViT: how bright each tubelet is",
        score=float(out_maps.scores[0, 0]),
        tile_size=96,
        frame_labels=captions,
    )
    strip.save(out / VIDEO_STRIP, optimize=True)
    save_video_gif(out / VIDEO_GIF, frames, heatmaps, fps=4, size=144)
    return {"frames": len(hits), "frames_on_square": sum(hits)}


def _peak_cell(heatmap: torch.Tensor) -> tuple[int, int]:
    """The (row, column) patch of the map's maximum."""
    y, x = divmod(int(heatmap.argmax()), heatmap.shape[-1])
    return y // tiny_video.SQUARE_PATCH, x // tiny_video.SQUARE_PATCH


def audio_picture(out: Path) -> dict:
    """The tone burst's spectrogram figure in `out`; returns the relevance peak's time and the burst's."""
    samples = tiny_audio.samples_for_frames(tiny_audio.FRAMES)
    waveform = tiny_audio.tone_burst(
        samples, BURST_START, BURST_DURATION, NOISE_SEED, frequency=BURST_FREQUENCY, level=NOISE_LEVEL
    )
    extractor = tiny_audio.feature_extractor()
    rate = tiny_audio.SAMPLING_RATE
    explained = LeGradExplainer(tiny_audio.make_tone_detector(), extractor).explain(
        audio=waveform, sampling_rate=rate, targets=["tone"]
    )
    curve = explained.relevance_over_time()[0, 0]  # [time frames]
    peak = float(explained.frame_times[curve.argmax()])
    spectrogram = extractor(waveform, sampling_rate=rate, return_tensors="np")["input_values"][0].T  # [mel, time]
    end = BURST_START + BURST_DURATION
    figure = spectrogram_figure(
        spectrogram,
        explained.heatmaps[0, 0],
        curve,
        label=f'"tone" of a hand-built AST: burst at {BURST_START:.2f}-{end:.2f} s, relevance peak at {peak:.2f} s',
        score=float(explained.scores[0, 0]),
        seconds_per_frame=explained.frame_times[1].item() - explained.frame_times[0].item(),
    )
    figure.save(out / AUDIO_FIGURE, optimize=True)
    return {"peak_seconds": peak, "burst_seconds": (BURST_START, end), "peak_in_burst": BURST_START <= peak <= end}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the folder to write the pictures into")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    args.out.mkdir(parents=True, exist_ok=True)
    video = video_pictures(args.out)
    audio = audio_picture(args.out)
    print(f"video: the map of {video['frames_on_square']} of {video['frames']} frames peaks on the moving square")
    start, end = audio["burst_seconds"]
    print(f"audio: relevance over time peaks at {audio['peak_seconds']:.2f} s, the burst is at {start:.2f}-{end:.2f} s")
    for name in (VIDEO_STRIP, VIDEO_GIF, AUDIO_FIGURE):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
