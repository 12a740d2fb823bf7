"""A tiny random TimeSformer video classifier (divided space-time attention), saved and reloaded.

Hidden 32, 3 blocks, 4 heads, 8-pixel patches on 32 px frames, 4 frames (a 4 x 4 x 4 token grid after the CLS),
5 labels; LayerNorm affines and zero biases perturbed as in `tiny_models`; the CLS token, the position and the time
embeddings (the time embeddings are zero at init) given random values, so each frame and patch position differs.
"""

from __future__ import annotations

import torch
from transformers import TimesformerConfig, TimesformerForVideoClassification, VideoMAEImageProcessorPil

from tiny_models import LABELS, Tiny, _build
from tiny_video import FRAME_SIZE, NUM_FRAMES, _processor, _round_trip_video

__all__ = ["NUM_LAYERS", "make_timesformer"]

NUM_LAYERS = 3


def make_timesformer(seed: int = 0, **overrides) -> Tiny:
    """TimesformerForVideoClassification + VideoMAEImageProcessorPil (32 x 32 center crop)."""
    config = TimesformerConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        image_size=FRAME_SIZE,
        patch_size=8,
        num_frames=NUM_FRAMES,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        **overrides,
    )
    model = _build(TimesformerForVideoClassification, config, seed)
    embeddings = model.timesformer.embeddings
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for param in (embeddings.cls_token, embeddings.position_embeddings, embeddings.time_embeddings):
            param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    return _round_trip_video(model, _processor(VideoMAEImageProcessorPil), f"timesformer-{seed}")
