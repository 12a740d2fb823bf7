"""Tiny random BLIP image-text retrieval models (`BlipForImageTextRetrieval`), built offline.

The vision tower is `tiny_models.VISION`'s size (hidden 32, 4 heads, patch 8, 48 px) with fused Q/K/V; the text
encoder is a 2-layer BERT with cross-attention to the image tokens (`is_decoder`, as BLIP's), over the WordPiece
vocabulary trained offline in `tiny_clip_layout` ([PAD] 0, [CLS] 2, [SEP] 3). `BlipProcessor` resizes to 48 x 48
without cropping. The model and processor are round-tripped through save_pretrained/from_pretrained.
"""

from __future__ import annotations

from transformers import (
    AutoProcessor,
    BlipConfig,
    BlipForImageTextRetrieval,
    BlipImageProcessorPil,
    BlipProcessor,
)

from tiny_clip_layout import make_wordpiece_tokenizer
from tiny_models import HIDDEN, IMAGE_SIZE, PROJECTION_DIM, TEXT, TEXT_MAX_POSITIONS, VISION, Tiny, _build, _round_trip

__all__ = ["NUM_LAYERS", "make_blip"]

NUM_LAYERS = 3  # distinct from the other tiny models' 4, so a wrong block list shows
# Weights larger than BERT's 0.02, so that prompts and images change the scores and maps visibly.
INIT_STD = 0.1


def _config(num_layers: int) -> BlipConfig:
    tok = make_wordpiece_tokenizer()
    text = dict(
        TEXT,
        vocab_size=len(tok),
        max_position_embeddings=TEXT_MAX_POSITIONS,
        encoder_hidden_size=HIDDEN,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        initializer_range=INIT_STD,
    )
    # BLIP's vision config initializes at std 1e-10 by default: a tiny model would then see no image at all.
    vision = dict(VISION, num_hidden_layers=num_layers, initializer_range=INIT_STD)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=PROJECTION_DIM)


def make_blip(seed: int = 0, num_layers: int = NUM_LAYERS) -> Tiny:
    """BlipForImageTextRetrieval + BlipProcessor (48 x 48 resize, BERT WordPiece tokenizer)."""
    model = _build(BlipForImageTextRetrieval, _config(num_layers), seed)
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=make_wordpiece_tokenizer())
    return _round_trip(model, processor, "blip", auto_model=BlipForImageTextRetrieval, auto_processor=AutoProcessor)
