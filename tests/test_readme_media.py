"""The README's "Video and audio" section: its Python runs as written, its pictures come from the script it names.

The Python blocks are run literally, with the Hub ids swapped for tiny local models of the same classes (no
network), on a folder of frames and a WAV file written here. `scripts/media_pictures.py` is run into a temporary
folder: it writes the three pictures, at the size of the checked-in ones, and measures what their caption says.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

import tiny_audio
import tiny_video

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
VIDEO_ID = "MCG-NJU/videomae-base-finetuned-kinetics"
AUDIO_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
AUDIOSET_LIKE = ("Speech", "Dog", "Music", "Bark", "Silence")
PICTURES = ("legrad_video_strip.png", "legrad_video.gif", "legrad_audio_spectrogram.png")
MAX_PICTURE_BYTES = 300 * 1024


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _python_blocks() -> dict[str, str]:
    """The section's Python blocks, by the Hub id each loads."""
    blocks = re.findall(r"```python\n(.*?)```", _section("Video and audio"), flags=re.S)
    by_model = {model_id: [block for block in blocks if f'"{model_id}"' in block] for model_id in (VIDEO_ID, AUDIO_ID)}
    assert all(len(found) == 1 for found in by_model.values()) and len(blocks) == 2, blocks
    return {model_id: found[0] for model_id, found in by_model.items()}


def _run_block(model_id: str, local_path: str) -> dict:
    block = _python_blocks()[model_id].replace(f'"{model_id}"', f'"{local_path}"')
    namespace = {"__name__": "readme_block"}
    exec(compile(block, f"<README block for {model_id}>", "exec"), namespace)
    return namespace


# --- the examples ------------------------------------------------------------------------------------------------
def test_video_example_runs_as_written(tmp_path, monkeypatch):
    tiny = tiny_video.make_videomae()  # 4 frames of 32 x 32: the example samples 4 of the folder's 10 frames
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip_frames").mkdir()
    for index, frame in enumerate(tiny_video.random_clip(0, frames=10)):  # 40 x 36: the example crops them
        frame.save(tmp_path / "clip_frames" / f"frame{index + 1}.png")
    namespace = _run_block(VIDEO_ID, tiny.path)

    frames = namespace["frames"]
    assert len(frames) == tiny_video.NUM_FRAMES and frames[1] == namespace["media"].load_video("clip_frames/")[2]
    assert namespace["out"].heatmaps.shape == (
        1,
        1,
        tiny_video.NUM_FRAMES,
        tiny_video.FRAME_SIZE,
        tiny_video.FRAME_SIZE,
    )
    assert namespace["out"].grid_maps.shape == (1, 1, 2, 4, 4)
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.n_frames == tiny_video.NUM_FRAMES and gif.size == (224, 224)
    assert Image.open(tmp_path / "strip.png").width > tiny_video.NUM_FRAMES * 128  # 4 tiles of 128 px


def test_audio_example_runs_as_written(tmp_path, monkeypatch):
    soundfile = pytest.importorskip("soundfile", reason="reading the example's clip.wav needs the [audio] extra")
    labels = dict(enumerate(AUDIOSET_LIKE))
    tiny = tiny_audio.make_ast(
        num_labels=len(labels), id2label=labels, label2id={name: index for index, name in labels.items()}
    )
    monkeypatch.chdir(tmp_path)
    samples = tiny_audio.samples_for_frames(tiny_audio.FRAMES)
    soundfile.write("clip.wav", tiny_audio.tone_burst(samples, 0.4, 0.15, seed=0), tiny_audio.SAMPLING_RATE)
    namespace = _run_block(AUDIO_ID, tiny.path)

    out = namespace["out"]
    assert out.labels_for(0) == ["Dog"]
    assert out.heatmaps.shape == (1, 1, tiny_audio.MEL_BINS, tiny_audio.FRAMES)
    assert namespace["curve"].shape == (tiny_audio.FRAMES,)
    assert 0.0 < namespace["peak_seconds"] < samples / tiny_audio.SAMPLING_RATE
    assert namespace["spectrogram"].shape == (tiny_audio.MEL_BINS, tiny_audio.FRAMES)
    assert Image.open(tmp_path / "clip.png").width > 768


# --- the pictures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pictures_script(tmp_path_factory):
    """scripts/media_pictures.py run once into a temporary folder: (the folder, its video and audio measures)."""
    spec = importlib.util.spec_from_file_location("media_pictures", ROOT / "scripts" / "media_pictures.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    try:
        spec.loader.exec_module(script)
        out = tmp_path_factory.mktemp("media_pictures")
        video, audio = script.video_pictures(out), script.audio_picture(out)
    finally:
        del sys.modules[spec.name]
    return out, video, audio


def test_script_writes_the_readme_pictures_at_their_size(pictures_script):
    out, _, _ = pictures_script
    section = _section("Video and audio")
    for name in PICTURES:
        assert f"](docs/{name})" in section, f"the README does not show docs/{name}"
        written, checked_in = out / name, ROOT / "docs" / name
        assert written.stat().st_size < MAX_PICTURE_BYTES
        assert checked_in.stat().st_size < MAX_PICTURE_BYTES
        with Image.open(written) as new, Image.open(checked_in) as old:
            assert new.size == old.size, f"docs/{name} is stale: python scripts/media_pictures.py"
            assert getattr(new, "n_frames", 1) == getattr(old, "n_frames", 1)
    with Image.open(out / "legrad_video.gif") as gif:
        assert gif.n_frames == tiny_video.SQUARE_FRAMES  # one overlay per frame the model saw


def test_the_pictures_caption_states_what_the_script_measures(pictures_script):
    _, video, audio = pictures_script
    section = _section("Video and audio")
    assert video["frames"] == tiny_video.SQUARE_FRAMES
    assert f"The map of {video['frames_on_square']} of its {video['frames']} frames peaks on the" in section
    assert audio["peak_in_burst"]
    assert f"The relevance over time peaks at {audio['peak_seconds']:.2f} s, inside the burst" in section
