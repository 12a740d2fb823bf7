"""Tiny random video classifiers: VideoMAE (no CLS; mean-pooling head or first-token head) and ViViT (CLS).

Hidden 32, 4 blocks, 4 heads, 8-pixel patches on 32 px frames, tubelets of 2 frames (4 frames: a 2 x 4 x 4 tubelet
grid), 5 labels; LayerNorm affines and zero biases perturbed as in `tiny_models`, ViViT's CLS token and position
embeddings (zero at init) given random values, saved and reloaded with their image processors.
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

__all__ = ["FRAME_SIZE", "NUM_FRAMES", "NUM_LAYERS", "make_videomae", "make_vivit", "random_clip"]

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
