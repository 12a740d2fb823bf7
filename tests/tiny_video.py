"""Tiny random video classifiers: VideoMAE (no CLS; mean-pooling head or first-token head) and ViViT (CLS).

Hidden 32, 4 blocks, 4 heads, 8-pixel patches on 32 px frames, tubelets of 2 frames (4 frames: a 2 x 4 x 4 tubelet
grid), 5 labels; LayerNorm affines and zero biases perturbed as in `tiny_models`, ViViT's CLS token and position
embeddings (zero at init) given random values, saved and reloaded with their image processors.

And a known answer (used by tests/test_family_video.py and scripts/media_pictures.py): `brightness_vivit`, a ViViT
whose class 0 reads tubelet brightness with weights constructed by hand, and `moving_square`, a bright square
stepping through noise.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    VideoMAEImageProcessorPil,
    VivitConfig,
    VivitForVideoClassification,
    VivitImageProcessor,
)

from tiny_models import LABELS, Tiny, _build, _round_trip

__all__ = [
    "clips_pixels",
    "FRAME_SIZE",
    "NUM_FRAMES",
    "NUM_LAYERS",
    "SQUARE_FRAMES",
    "SQUARE_PATCH",
    "SQUARE_SIZE",
    "SQUARE_TUBELET",
    "brightness_vivit",
    "make_videomae",
    "make_vivit",
    "moving_square",
    "random_clip",
]

FRAME_SIZE = 32
NUM_FRAMES = 4
NUM_LAYERS = 4
PATCH_SIZE = 8
VIDEO = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=NUM_LAYERS,
    num_attention_heads=4,
    image_size=FRAME_SIZE,
    num_labels=len(LABELS),
    id2label=dict(enumerate(LABELS)),
    label2id={name: i for i, name in enumerate(LABELS)},
)


def _processor(processor_cls):
    return processor_cls(size={"shortest_edge": FRAME_SIZE}, crop_size={"height": FRAME_SIZE, "width": FRAME_SIZE})


def _round_trip_video(model, processor, name: str) -> Tiny:
    return _round_trip(
        model, processor, name, auto_model=AutoModelForVideoClassification, auto_processor=AutoImageProcessor
    )


def make_videomae(
    seed: int = 0, num_frames: int = NUM_FRAMES, tubelet_size: int = 2, use_mean_pooling: bool = True
) -> Tiny:
    """VideoMAEForVideoClassification + VideoMAEImageProcessorPil (32 x 32 center crop)."""
    config = VideoMAEConfig(
        **VIDEO,
        patch_size=PATCH_SIZE,
        num_frames=num_frames,
        tubelet_size=tubelet_size,
        use_mean_pooling=use_mean_pooling,
    )
    model = _build(VideoMAEForVideoClassification, config, seed)
    name = f"videomae-{num_frames}x{tubelet_size}-{'mean' if use_mean_pooling else 'first'}"
    return _round_trip_video(model, _processor(VideoMAEImageProcessorPil), name)


def make_vivit(seed: int = 0, num_frames: int = NUM_FRAMES, tubelet_frames: int = 2) -> Tiny:
    """VivitForVideoClassification + VivitImageProcessor (32 x 32 center crop)."""
    config = VivitConfig(**VIDEO, num_frames=num_frames, tubelet_size=[tubelet_frames, PATCH_SIZE, PATCH_SIZE])
    model = _build(VivitForVideoClassification, config, seed)
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for param in (model.vivit.embeddings.cls_token, model.vivit.embeddings.position_embeddings):
            param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    return _round_trip_video(model, _processor(VivitImageProcessor), f"vivit-{num_frames}x{tubelet_frames}")


def random_clip(seed: int, frames: int = NUM_FRAMES, size: tuple[int, int] = (40, 36)) -> list[Image.Image]:
    """`frames` random RGB frames of (width, height) `size`."""
    rng = np.random.default_rng(seed)
    width, height = size
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(frames)]


def clips_pixels(tiny: Tiny, count: int = 2, frames: int = NUM_FRAMES) -> torch.Tensor:
    """The processor's pixel values [count, frames, 3, 32, 32] for `count` random clips."""
    clips = [random_clip(seed, frames) for seed in range(count)]
    return tiny.processor(clips, return_tensors="pt")["pixel_values"]


# --- a known answer: a bright square moving through noise ---------------------------------------------------------
SQUARE_FRAMES, SQUARE_SIZE, SQUARE_PATCH, SQUARE_TUBELET = 8, 48, 8, 2


def brightness_vivit() -> VivitForVideoClassification:
    """A 2-block ViViT whose class 0 reads how bright each tubelet is, with weights constructed by hand.

    The tubelet embedding writes the tubelet's mean pixel value, scaled, into +feature 0 and -feature 1, plus a
    constant in feature 2 (so the first layernorm keeps the brightness instead of only its sign); each head's first
    value feature is feature 0 - feature 1 of the normalized token, which the output projection writes into feature
    3; the MLPs are off, and class 0's row of the classifier is feature 3. Queries and keys stay random: under the
    token-mean readout the map does not depend on them. LeGrad's map of class 0 then grows with each tubelet's
    brightness, and nothing else in the weights says where the square is.
    """
    config = VivitConfig(
        image_size=SQUARE_SIZE,
        num_frames=SQUARE_FRAMES,
        tubelet_size=[SQUARE_TUBELET, SQUARE_PATCH, SQUARE_PATCH],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = VivitForVideoClassification(config).eval()
    head_dim = config.hidden_size // config.num_attention_heads
    with torch.no_grad():
        projection = model.vivit.embeddings.patch_embeddings.projection
        projection.weight.zero_()
        projection.bias.zero_()
        pixels_per_tubelet = 3 * SQUARE_TUBELET * SQUARE_PATCH * SQUARE_PATCH
        projection.weight[0] = 10.0 / pixels_per_tubelet
        projection.weight[1] = -10.0 / pixels_per_tubelet
        projection.bias[2] = 1.0
        model.vivit.embeddings.cls_token.zero_()
        model.vivit.embeddings.position_embeddings.zero_()
        for layer in model.vivit.layers:
            attention = layer.attention
            attention.v_proj.weight.zero_()
            attention.v_proj.bias.zero_()
            attention.o_proj.weight.zero_()
            attention.o_proj.bias.zero_()
            for head in range(config.num_attention_heads):
                attention.v_proj.weight[head * head_dim, 0] = 1.0
                attention.v_proj.weight[head * head_dim, 1] = -1.0
                attention.o_proj.weight[3, head * head_dim] = 1.0
            layer.mlp.fc2.weight.zero_()
            layer.mlp.fc2.bias.zero_()
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[0, 3] = 1.0
        model.classifier.weight[1, 3] = -1.0
    return model


def moving_square(seed: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A clip [frames, 3, H, W] of uniform noise in [-1, 1] with a square of +1 (as bright as the brightest noise)
    one patch wide, stepping one patch in a random direction every tubelet; and its (row, column) patch per frame."""
    rng = np.random.default_rng(seed)
    cells = SQUARE_SIZE // SQUARE_PATCH
    clip = rng.uniform(-1, 1, (SQUARE_FRAMES, 3, SQUARE_SIZE, SQUARE_SIZE)).astype(np.float32)
    row, column = rng.integers(1, cells - 1, 2)
    step = rng.choice([-1, 1], 2)
    positions = []
    for frame in range(SQUARE_FRAMES):
        if frame and frame % SQUARE_TUBELET == 0:
            row, column = np.clip(row + step[0], 0, cells - 1), np.clip(column + step[1], 0, cells - 1)
        top, left = row * SQUARE_PATCH, column * SQUARE_PATCH
        clip[frame, :, top : top + SQUARE_PATCH, left : left + SQUARE_PATCH] = 1.0
        positions.append((int(row), int(column)))
    return torch.from_numpy(clip), positions
