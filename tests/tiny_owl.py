"""Tiny OWL-ViT and OWLv2 detectors for tests, built offline and round-tripped through save_pretrained/from_pretrained.

OWL's text tower pools the position of the largest token id and the detector treats a query whose first token id
is 0 as padding, as the real CLIP vocabulary makes it (bos 49406, eos 49407, pad "!" 0): the tiny tokenizer has
pad 0, and bos and eos appended after the trained vocabulary, eos last. The class head takes queries of the text
tower's hidden size, so `projection_dim` equals it.

OWLv2's image processor resizes with scipy (or torchvision), which the test environment lacks: the tiny OWLv2
processor pads to a square and does not resize, so its test images have a longer side of `OWLV2_IMAGE_SIZE`.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessorPil,
    Owlv2Processor,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTImageProcessorPil,
    OwlViTProcessor,
    PreTrainedTokenizerFast,
)

from tiny_models import HIDDEN, IMAGE_SIZE, PATCH_SIZE, PROMPTS, TEXT, TEXT_MAX_POSITIONS, Tiny, _build, _round_trip

OWLV2_IMAGE_SIZE = 64
NUM_LAYERS = 3
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"
VISION = dict(
    hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=NUM_LAYERS, num_attention_heads=4, patch_size=PATCH_SIZE
)


@functools.cache
def _trained_bpe() -> str:
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(
        vocab_size=160,
        special_tokens=[PAD, UNK],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz0123456789"),
        show_progress=False,
    )
    tk.train_from_iterator(PROMPTS, trainer)
    tk.add_special_tokens([BOS, EOS])  # ids after the vocabulary: bos > 0, eos the largest
    bos, eos = tk.token_to_id(BOS), tk.token_to_id(EOS)
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return tk.to_str()


def make_owl_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained offline on the tiny PROMPTS (pad 0, unk 1, bos and eos the two largest ids)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_bpe()),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=TEXT_MAX_POSITIONS,
    )


def _config(config_cls, tok: PreTrainedTokenizerFast, image_size: int):
    text = dict(
        TEXT,
        vocab_size=len(tok),
        max_position_embeddings=TEXT_MAX_POSITIONS,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return config_cls(text_config=text, vision_config=dict(VISION, image_size=image_size), projection_dim=HIDDEN)


def _round(model, processor, name: str) -> Tiny:
    return _round_trip(
        model, processor, name, auto_model=AutoModelForZeroShotObjectDetection, auto_processor=AutoProcessor
    )


def owlvit_processor(tok: PreTrainedTokenizerFast | None = None) -> OwlViTProcessor:
    """OWL-ViT's processor at the tiny size: resize (squash) to 48 x 48, no crop."""
    image_processor = OwlViTImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return OwlViTProcessor(image_processor=image_processor, tokenizer=tok or make_owl_tokenizer())


def make_owlvit(seed: int = 0) -> Tiny:
    """OwlViTForObjectDetection (48 px, patch 8: 36 boxes) + OwlViTProcessor."""
    tok = make_owl_tokenizer()
    model = _build(OwlViTForObjectDetection, _config(OwlViTConfig, tok, IMAGE_SIZE), seed)
    return _round(model, owlvit_processor(tok), "owlvit")


def make_owlv2(seed: int = 0) -> Tiny:
    """Owlv2ForObjectDetection (64 px, patch 8: 64 boxes) + Owlv2Processor (pads to a square, no resize)."""
    tok = make_owl_tokenizer()
    model = _build(Owlv2ForObjectDetection, _config(Owlv2Config, tok, OWLV2_IMAGE_SIZE), seed)
    image_processor = Owlv2ImageProcessorPil(
        size={"height": OWLV2_IMAGE_SIZE, "width": OWLV2_IMAGE_SIZE}, do_resize=False
    )
    return _round(model, Owlv2Processor(image_processor=image_processor, tokenizer=tok), "owlv2")


@torch.no_grad()
def sharpen_logits(model: torch.nn.Module, scale: float = 4.0) -> None:
    """Make the class head's scores spread out (random init gives logits near 0, every box near 0.5)."""
    model.class_head.logit_scale.bias.fill_(scale)
