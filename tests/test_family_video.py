"""Video classifiers: VideoMAE (no CLS; mean-pooling or first-token head) and ViViT (CLS), over tubelet grids.

Raw `grid_maps` and `layer_maps` [batch, targets, (layers,) t, h, w] against the independent reference in
`reference_video.py` (eager attention, full graph, one autograd.grad per layer and target) for the default, all and
an arbitrary set of layers, 1 and 3 targets, a batch of 2 clips, `score="model"` and odd frame counts; heatmaps
[batch, targets, frames, H, W] are the grid maps upsampled trilinearly and min-max normalized; `videos=` in every
form equals the processor's `pixel_values`; clear errors for wrong inputs; bfloat16 close to float32; the model
left as found; a known answer (a bright square moving through noise, on a ViViT whose weights are constructed so
that its class reads tubelet brightness) reported as the rate of frames whose map peaks on the square; and the
image path of `maps` unchanged, byte for byte, against its 2-D implementation from before grids of any rank.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from transformers_legrad import LeGradExplainer, maps, media
from transformers_legrad.adapters.video import VideoMAEClassifierAdapter, VivitClassifierAdapter
from transformers_legrad.videos import as_videos, is_one_clip

import tiny_video
from reference_video import layer_logits, reference_layer_maps
from test_engine import assert_same_state, model_state
from test_exact import assert_raw_maps_match, pearson, placed_at_patch_centres
from tiny_models import make_vit, random_image
from tiny_video import (
    FRAME_SIZE,
    NUM_FRAMES,
    NUM_LAYERS,
    SQUARE_FRAMES,
    SQUARE_PATCH,
    SQUARE_SIZE,
    brightness_vivit,
    clips_pixels,
    moving_square,
    random_clip,
)

FAMILIES = ["videomae", "videomae_first_token", "vivit"]
ADAPTERS = {
    "videomae": VideoMAEClassifierAdapter,
    "videomae_first_token": VideoMAEClassifierAdapter,
    "vivit": VivitClassifierAdapter,
}
LAYER_CASES = {
    "default": (None, [NUM_LAYERS - 2, NUM_LAYERS - 1]),
    "all": ("all", list(range(NUM_LAYERS))),
    "arbitrary": ([0, 2], [0, 2]),
}


@pytest.fixture(scope="module")
def videomae():
    return tiny_video.make_videomae()


@pytest.fixture(scope="module")
def videomae_first_token():
    return tiny_video.make_videomae(seed=1, use_mean_pooling=False)


@pytest.fixture(scope="module")
def vivit():
    return tiny_video.make_vivit()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_class_has_its_adapter(family, request):
    tiny = request.getfixturevalue(family)
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    assert type(explainer.adapter) is ADAPTERS[family]
    assert explainer.adapter.spec.modality == "video"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer_case", LAYER_CASES)
@pytest.mark.parametrize("targets", [[2], [0, 4, 1]])
def test_maps_equal_the_reference(family, layer_case, targets, request):
    tiny = request.getfixturevalue(family)
    layers, indices = LAYER_CASES[layer_case]
    pixel_values = clips_pixels(tiny)
    out = LeGradExplainer(tiny.model, layers=layers).explain(
        pixel_values=pixel_values, targets=targets, return_layer_maps=True
    )
    reference = reference_layer_maps(tiny.model, pixel_values, torch.tensor([targets, targets]), indices)
    assert out.explained_layers == indices
    assert out.grid_maps.shape == (2, len(targets), 2, 4, 4)
    assert out.grid_shapes == [(2, 4, 4)] * 2 and out.image_sizes == [(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)] * 2
    assert_raw_maps_match(out.layer_maps, reference)
    assert_raw_maps_match(out.grid_maps, reference.sum(dim=2))


@pytest.mark.parametrize("family", FAMILIES)
def test_model_score_equals_the_reference_of_the_models_own_pooling(family, request):
    tiny = request.getfixturevalue(family)
    pixel_values = clips_pixels(tiny)
    out = LeGradExplainer(tiny.model, layers="all", score="model").explain(
        pixel_values=pixel_values, targets=[1, 3], return_layer_maps=True
    )
    reference = reference_layer_maps(
        tiny.model, pixel_values, torch.tensor([[1, 3], [1, 3]]), list(range(NUM_LAYERS)), pooling="model"
    )
    assert_raw_maps_match(out.layer_maps, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_pooling_readout_of_the_last_block_is_the_models_logits(family, request):
    tiny = request.getfixturevalue(family)
    pixel_values = clips_pixels(tiny)
    adapter = LeGradExplainer(tiny.model).adapter
    with torch.no_grad():
        outputs = tiny.model(pixel_values, output_hidden_states=True)
        last = outputs.hidden_states[-1]
        ours = adapter.layer_features(last, None, "model")
        theirs = layer_logits(tiny.model, last, "model")
    torch.testing.assert_close(ours, outputs.logits)
    torch.testing.assert_close(theirs, outputs.logits)


@pytest.mark.parametrize(
    ("make", "frames", "tubelet", "grid_frames"),
    [
        (tiny_video.make_videomae, 3, 1, 3),
        (tiny_video.make_videomae, 3, 2, 1),  # the Conv3d drops the last frame, the heatmap still covers it
        (tiny_video.make_vivit, 3, 1, 3),
        (tiny_video.make_vivit, 5, 2, 2),  # tubelets on frames 0-1 and 2-3, frame 4 in none
    ],
)
def test_odd_frame_counts_equal_the_reference(make, frames, tubelet, grid_frames):
    """`config.num_frames` odd: the maps equal the reference, and each tubelet's value sits at the centre of its
    frames (t i + (t - 1) / 2), held over the frames after the last tubelet, not stretched over all the frames."""
    tiny = make(
        seed=2, num_frames=frames, **{"tubelet_size" if make is tiny_video.make_videomae else "tubelet_frames": tubelet}
    )
    pixel_values = clips_pixels(tiny, frames=frames)
    out = LeGradExplainer(tiny.model, tiny.processor, layers="all").explain(
        videos=[random_clip(seed, frames) for seed in range(2)], targets=[0, 2], return_layer_maps=True
    )
    reference = reference_layer_maps(tiny.model, pixel_values, torch.tensor([[0, 2], [0, 2]]), list(range(4)))
    assert out.grid_shapes == [(grid_frames, 4, 4)] * 2
    assert out.heatmaps.shape == (2, 2, frames, FRAME_SIZE, FRAME_SIZE)
    assert torch.isfinite(out.heatmaps).all()
    assert_raw_maps_match(out.layer_maps, reference)
    geometry = ((tubelet, tubelet), (8, 8), (8, 8))
    placed = placed_at_patch_centres(out.grid_maps, (frames, FRAME_SIZE, FRAME_SIZE), geometry)
    torch.testing.assert_close(out.heatmaps, placed)


@pytest.mark.parametrize("family", ["videomae", "vivit"])
@pytest.mark.parametrize("frames", [5, 3, 6])
def test_exactly_num_frames_are_taken(family, frames, request):
    """5 frames with tubelets of 2 would fill the model's 2 tubelets (the Conv3d drops the 5th): refused too."""
    tiny = request.getfixturevalue(family)
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    with pytest.raises(ValueError, match=r"takes 4 frames per video, exactly.*media\.sample_frames\(frames, model"):
        explainer.explain(pixel_values=torch.randn(1, frames, 3, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(ValueError, match="takes 4 frames per video, exactly"):
        explainer.explain(videos=random_clip(0, frames=frames))


def fade_in(frames: int = NUM_FRAMES, seed: int = 0) -> np.ndarray:
    """float32 [frames, 32, 32, 3] in [0, 255], brightening from black: frame 0's values are all <= 1."""
    texture = np.random.default_rng(seed).uniform(0, 1, (FRAME_SIZE, FRAME_SIZE, 3))
    gains = np.array([1.0, 80.0, 160.0, 255.0][:frames])
    return (gains[:, None, None, None] * texture).astype(np.float32)


@pytest.mark.parametrize("form", ["array", "list of frames"])
def test_a_float_clip_is_scaled_as_one_array(videomae, form):
    """A fade-in float clip in [0, 255]: its near-black first frame stays near black (one scale for the whole clip,
    `media.load_video`), not multiplied by 255 as an image of its own in [0, 1] would be."""
    clip = fade_in()
    videos = clip if form == "array" else list(clip)
    frames = as_videos(videos)[0]
    assert np.asarray(frames[0]).max() <= 1
    expected = [Image.fromarray(np.rint(frame).astype(np.uint8)) for frame in clip]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, expected, strict=True))
    explainer = LeGradExplainer(videomae.model, videomae.processor)
    got = explainer.explain(videos=videos, targets=[1, 2]).grid_maps
    torch.testing.assert_close(got, explainer.explain(videos=expected, targets=[1, 2]).grid_maps, rtol=0, atol=0)


def test_a_folder_of_frames_or_an_animated_image_is_a_video(videomae, tmp_path):
    """`videos=` takes a path as `media.load_video` reads it: a folder of frames (natural order) or a GIF."""
    explainer = LeGradExplainer(videomae.model, videomae.processor)
    clips = [random_clip(0), random_clip(1)]
    expected = explainer.explain(videos=clips, targets=[1, 2]).grid_maps
    folders = []
    for index, clip in enumerate(clips):
        folder = tmp_path / f"clip{index}"
        folder.mkdir()
        for number, frame in enumerate(clip):
            frame.save(folder / f"frame{number * 5}.png")  # frame0, frame5, frame10, frame15: natural order
        folders.append(folder)
    torch.testing.assert_close(explainer.explain(videos=str(folders[0]), targets=[1, 2]).grid_maps, expected[:1])
    torch.testing.assert_close(explainer.explain(videos=folders[1], targets=[1, 2]).grid_maps, expected[1:])
    torch.testing.assert_close(explainer.explain(videos=folders, targets=[1, 2]).grid_maps, expected)
    gif = tmp_path / "c.gif"
    clips[0][0].save(gif, save_all=True, append_images=clips[0][1:], duration=100, loop=0)
    from_gif = explainer.explain(videos=str(gif), targets=[1, 2])
    assert from_gif.image_sizes == [(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)]
    torch.testing.assert_close(
        from_gif.grid_maps, explainer.explain(videos=media.load_video(gif), targets=[1, 2]).grid_maps, rtol=0, atol=0
    )
    with Image.open(gif) as animation:
        torch.testing.assert_close(explainer.explain(videos=animation, targets=[1, 2]).grid_maps, from_gif.grid_maps)


def test_a_list_of_animated_image_files_is_a_list_of_clips(videomae, tmp_path):
    """GIF paths in a list are clips (each with all its frames), still image paths are frames; a mix is refused."""
    explainer = LeGradExplainer(videomae.model, videomae.processor)
    gifs, stills = [], []
    for index in range(2):
        clip = random_clip(index)
        gifs.append(str(tmp_path / f"c{index}.gif"))
        clip[0].save(gifs[-1], save_all=True, append_images=clip[1:], duration=100, loop=0)
    for index, frame in enumerate(random_clip(2)):
        stills.append(str(tmp_path / f"f{index}.png"))
        frame.save(stills[-1])
    from_gifs = explainer.explain(videos=gifs, targets=[1])
    expected = explainer.explain(videos=[media.load_video(gif) for gif in gifs], targets=[1])
    torch.testing.assert_close(from_gifs.grid_maps, expected.grid_maps, rtol=0, atol=0)
    from_stills = explainer.explain(videos=stills, targets=[1])
    torch.testing.assert_close(
        from_stills.grid_maps, explainer.explain(videos=media.load_video(stills), targets=[1]).grid_maps
    )
    assert is_one_clip(stills) and not is_one_clip(gifs)
    with pytest.raises(TypeError, match="not a mix"):
        explainer.explain(videos=[gifs[0], *stills[:3]], targets=[1])
    with pytest.raises(ValueError, match="typo.gif: no such file or folder"):  # not "a mix"
        explainer.explain(videos=[gifs[0], str(tmp_path / "typo.gif")], targets=[1])
    frames = [torch.zeros(32, 32, 3)] * 4  # frames as tensors: one clear refusal, in the explainer and the pipeline
    with pytest.raises(TypeError, match="a 3-D Tensor, which is neither a clip nor a frame"):
        explainer.explain(videos=frames, targets=[1])
    with pytest.raises(TypeError, match="neither a clip nor a frame"):
        is_one_clip(frames)


@pytest.mark.parametrize("family", FAMILIES)
def test_relevance_over_time_is_each_frames_mean_map(family, request):
    tiny = request.getfixturevalue(family)
    out = LeGradExplainer(tiny.model, tiny.processor).explain(videos=[random_clip(0), random_clip(1)], top_k=2)
    assert out.modality == "video"
    curve = out.relevance_over_time()
    assert curve.shape == (2, 2, NUM_FRAMES)
    torch.testing.assert_close(curve, out.heatmaps.mean(dim=(-2, -1)))
    torch.testing.assert_close(maps.relevance_over_time(out.heatmaps, "video"), curve)
    with pytest.raises(ValueError, match=r"video `heatmaps` must be \[batch, targets, frames, height, width\]"):
        maps.relevance_over_time(out.heatmaps[0], "video")


def test_image_maps_have_no_relevance_over_time():
    vit = make_vit()
    out = LeGradExplainer(vit.model, vit.processor).explain(images=[random_image(0), random_image(1)], top_k=2)
    assert out.modality == "image"
    with pytest.raises(ValueError, match=r"for audio and video models' maps; image maps .* have no time axis"):
        out.relevance_over_time()
    with pytest.raises(ValueError, match="image maps have none"):
        maps.relevance_over_time(out.heatmaps, "image")
    with pytest.raises(ValueError, match=r"audio `heatmaps` must be"):
        maps.relevance_over_time(out.heatmaps[:, :, None], "audio")


@pytest.mark.parametrize("family", FAMILIES)
def test_heatmaps_are_the_grid_maps_upsampled_trilinearly_and_normalized(family, request):
    tiny = request.getfixturevalue(family)
    out = LeGradExplainer(tiny.model, tiny.processor).explain(videos=[random_clip(0), random_clip(1)], top_k=2)
    assert out.heatmaps.shape == (2, 2, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
    assert torch.isfinite(out.heatmaps).all() and out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1
    upsampled = F.interpolate(out.grid_maps, size=out.heatmaps.shape[-3:], mode="trilinear", align_corners=False)
    low = upsampled.amin(dim=(-3, -2, -1), keepdim=True)
    high = upsampled.amax(dim=(-3, -2, -1), keepdim=True)
    torch.testing.assert_close(out.heatmaps, (upsampled - low) / (high - low))


@pytest.mark.parametrize("family", ["videomae", "vivit"])
def test_every_videos_form_equals_the_processors_pixel_values(family, request):
    tiny = request.getfixturevalue(family)
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    clips = [random_clip(0), random_clip(1)]
    expected = explainer.explain(pixel_values=clips_pixels(tiny), targets=[1, 2]).grid_maps
    arrays = [np.stack([np.asarray(frame) for frame in clip]) for clip in clips]
    for videos in (clips, arrays, [list(array) for array in arrays]):
        torch.testing.assert_close(explainer.explain(videos=videos, targets=[1, 2]).grid_maps, expected)
    one = explainer.explain(videos=arrays[1], targets=[1, 2])
    torch.testing.assert_close(one.grid_maps, expected[1:])
    torch.testing.assert_close(explainer.explain(videos=np.stack(arrays), targets=[1, 2]).grid_maps, expected)


def test_wrong_inputs_get_clear_errors(videomae, vivit):
    explainer = LeGradExplainer(videomae.model, videomae.processor)
    with pytest.raises(ValueError, match="one image, not a video"):
        explainer.explain(videos=random_image(0))
    with pytest.raises(ValueError, match="is a video model: pass `videos=`"):
        explainer.explain(images=random_clip(0))
    with pytest.raises(ValueError, match="takes 4 frames per video"):
        explainer.explain(videos=random_clip(0, frames=2))
    with pytest.raises(ValueError, match="takes 4 frames per video"):
        LeGradExplainer(vivit.model).explain(pixel_values=torch.randn(1, 6, 3, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(ValueError, match="one image per row"):
        explainer.explain(pixel_values=torch.randn(1, 3, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(ValueError, match="frames of 32x32 pixels"):
        explainer.explain(pixel_values=torch.randn(1, NUM_FRAMES, 3, 48, 48))
    with pytest.raises(ValueError, match="2 channels"):
        explainer.explain(pixel_values=torch.randn(1, NUM_FRAMES, 2, FRAME_SIZE, FRAME_SIZE))
    with pytest.raises(TypeError, match="as `pixel_values=`"):
        explainer.explain(videos=torch.randn(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3))
    with pytest.raises(ValueError, match="empty"):
        explainer.explain(videos=[])
    with pytest.raises(ValueError, match="need the model's processor"):
        LeGradExplainer(videomae.model).explain(videos=random_clip(0))
    vit = make_vit()
    with pytest.raises(ValueError, match="`videos` are for video models"):
        LeGradExplainer(vit.model, vit.processor).explain(videos=random_clip(0))


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_maps_correlate_with_float32(family, request):
    tiny = request.getfixturevalue(family)
    pixel_values = clips_pixels(tiny)
    full = LeGradExplainer(tiny.model, layers="all").explain(pixel_values=pixel_values, targets=[0, 3])
    half_model = copy.deepcopy(tiny.model).to(torch.bfloat16)
    half = LeGradExplainer(half_model, layers="all").explain(pixel_values=pixel_values, targets=[0, 3])
    assert torch.isfinite(half.grid_maps).all() and half.grid_maps.flatten(2).amax(-1).gt(0).all()
    correlation = pearson(full.grid_maps, half.grid_maps)
    assert correlation.min() >= 0.99, correlation
    assert next(half_model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("score", ["legrad", "model"])
def test_the_model_is_left_untouched(family, score, request):
    tiny = request.getfixturevalue(family)
    model = copy.deepcopy(tiny.model).train()
    before = model_state(model)
    LeGradExplainer(model, tiny.processor, layers="all", score=score).explain(videos=random_clip(4), targets=[1, 2])
    assert_same_state(before, model_state(model))


# --- a known answer: a bright square moving through noise (tiny_video.brightness_vivit) ------------------------
def test_the_map_of_each_frame_peaks_on_a_moving_square():
    model = brightness_vivit()
    clips, positions = zip(*(moving_square(seed) for seed in range(8)), strict=True)
    out = LeGradExplainer(model).explain(pixel_values=torch.stack(clips), targets=[0])
    assert out.heatmaps.shape == (8, 1, SQUARE_FRAMES, SQUARE_SIZE, SQUARE_SIZE)
    hits = []
    for b, frames in enumerate(positions):
        for frame, (row, column) in enumerate(frames):
            peak = int(out.heatmaps[b, 0, frame].argmax())
            y, x = divmod(peak, SQUARE_SIZE)
            hits.append((y // SQUARE_PATCH, x // SQUARE_PATCH) == (row, column))
    rate = sum(hits) / len(hits)
    print(f"moving square: the map of {rate:.0%} of {len(hits)} frames peaks on the square")
    assert rate >= 0.95, rate


# --- images unchanged --------------------------------------------------------------------------------------------
def _heatmaps_before_any_rank(grid_maps, grid_shapes, image_sizes):
    """`maps.heatmaps_from_grids` as it was for 2-D grids only (commit c04411f), for the byte-identical check."""

    def min_max_2d(values, valid=None):
        values = values.float()
        low, high = values.amin(dim=(-2, -1), keepdim=True), values.amax(dim=(-2, -1), keepdim=True)
        span = high - low
        normalized = torch.where(span > 0, (values - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
        return normalized.clamp_(0.0, 1.0)

    grid_maps = grid_maps.float()
    max_height, max_width = max(h for h, _ in image_sizes), max(w for _, w in image_sizes)
    if len(set(grid_shapes)) == 1 and len(set(image_sizes)) == 1:
        upsampled = F.interpolate(grid_maps, size=(max_height, max_width), mode="bilinear", align_corners=False)
        return min_max_2d(upsampled)
    heatmaps = grid_maps.new_zeros(grid_maps.shape[0], grid_maps.shape[1], max_height, max_width)
    for b, ((h, w), (height, width)) in enumerate(zip(grid_shapes, image_sizes, strict=True)):
        upsampled = F.interpolate(
            grid_maps[b : b + 1, :, :h, :w], size=(height, width), mode="bilinear", align_corners=False
        )
        heatmaps[b : b + 1, :, :height, :width] = min_max_2d(upsampled)
    return heatmaps


def test_image_maps_are_byte_identical_to_the_two_dimensional_implementation():
    vit = make_vit()
    out = LeGradExplainer(vit.model, vit.processor).explain(images=[random_image(0), random_image(1)], top_k=2)
    before = _heatmaps_before_any_rank(out.grid_maps, out.grid_shapes, out.image_sizes)
    assert torch.equal(out.heatmaps, before)
    grids = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    grids[0, :, 4:] = 0
    shapes, sizes = [(4, 6), (5, 3)], [(32, 48), (40, 24)]
    assert torch.equal(maps.heatmaps_from_grids(grids, shapes, sizes), _heatmaps_before_any_rank(grids, shapes, sizes))
    relevance = torch.rand(2, 3, 1, 1 + 30)
    laid_out = maps.tokens_to_grids(relevance, 1, shapes)
    assert torch.equal(laid_out[1, :, 0, :5, :3], relevance[1, :, 0, 1:16].reshape(3, 5, 3))
    assert torch.equal(laid_out[0, :, 0, :4, :6], relevance[0, :, 0, 1:25].reshape(3, 4, 6))
    assert laid_out[0, :, :, 4:].abs().sum() == 0 and laid_out[1, :, :, :, 3:].abs().sum() == 0
