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

import numpy as np
import torch
from PIL import Image
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


@torch.no_grad()
def _moderate_heads(model: torch.nn.Module) -> torch.nn.Module:
    """Scale the heads' weights to 1/sqrt(fan_in): OWL's init (std 1) saturates every score and box of a random
    model at 0 or 1, where ties would hide a wrong order or a wrong box."""
    for name in ("class_head", "box_head", "objectness_head"):
        for module in getattr(model, name, torch.nn.Identity()).modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(module.in_features**-0.5)
    return model


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
    model = _moderate_heads(_build(OwlViTForObjectDetection, _config(OwlViTConfig, tok, IMAGE_SIZE), seed))
    return _round(model, owlvit_processor(tok), "owlvit")


def make_owlv2(seed: int = 0) -> Tiny:
    """Owlv2ForObjectDetection (64 px, patch 8: 64 boxes) + Owlv2Processor (pads to a square, no resize)."""
    tok = make_owl_tokenizer()
    model = _moderate_heads(_build(Owlv2ForObjectDetection, _config(Owlv2Config, tok, OWLV2_IMAGE_SIZE), seed))
    image_processor = Owlv2ImageProcessorPil(
        size={"height": OWLV2_IMAGE_SIZE, "width": OWLV2_IMAGE_SIZE}, do_resize=False
    )
    return _round(model, Owlv2Processor(image_processor=image_processor, tokenizer=tok), "owlv2")


# --- a detector made to find bright objects ---------------------------------------------------------------------
#: Box side of the constructed detector, in patches (its box head predicts this size around each patch's corner).
BRIGHT_BOX_PATCHES = 4


def bright_scene(cells: tuple[int, int], size: int = IMAGE_SIZE, cell_patches: int = 2) -> Image.Image:
    """A black image with one white square of `cell_patches` x `cell_patches` patches whose top-left patch is at
    (row, column) `cells`."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = cells[0] * PATCH_SIZE, cells[1] * PATCH_SIZE
    pixels[top : top + cell_patches * PATCH_SIZE, left : left + cell_patches * PATCH_SIZE] = 255
    return Image.fromarray(pixels)


@torch.no_grad()
def _construct_bright_detector(model: OwlViTForObjectDetection) -> None:
    """Weights (one block) with which every query finds the brightest patches, and attention carries brightness.

    Residual dims (each token's vector has mean 0, so every LayerNorm only rescales it): a patch holds its brightness
    b at dims 0/1 as (+b, -b) and a constant at 2/3 (position embeddings); the CLS token holds constant pairs
    (p, p) at 0/1, 2/3 and 4/5, balanced by (-p, -p) at 6..11, so the CLS merge keeps each patch's pairs. Attention
    is uniform (zero Q/K); V (head 0) is a patch's brightness, and the output projection writes the attended mean
    o at dims 4/5 as (+o, -o). The class head's dense0 reads (brightness + attended brightness, constant), so its
    normalized logit grows with the patch's own brightness and with the brightness the attention brings: the
    gradient of a box's logit favours attention to bright keys. The text tower maps every prompt to e_0, and the box
    head predicts boxes `BRIGHT_BOX_PATCHES` patches wide around each patch's grid corner.
    """
    for parameter in model.parameters():
        parameter.zero_()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)
    vision = model.owlvit.vision_model
    embeddings = vision.embeddings
    channels = embeddings.patch_embedding.weight.shape[1]
    brightness = torch.full((channels, PATCH_SIZE, PATCH_SIZE), 1.0 / (channels * PATCH_SIZE**2))
    embeddings.patch_embedding.weight[0], embeddings.patch_embedding.weight[1] = brightness, -brightness
    embeddings.position_embedding.weight[1:, 2], embeddings.position_embedding.weight[1:, 3] = 1.0, -1.0
    embeddings.class_embedding[:6], embeddings.class_embedding[6:12] = 1.0, -1.0
    block = vision.encoder.layers[0]
    block.self_attn.v_proj.weight[0, 0], block.self_attn.v_proj.weight[0, 1] = 0.5, -0.5
    block.self_attn.out_proj.weight[4, 0], block.self_attn.out_proj.weight[5, 0] = 1.0, -1.0
    head = model.class_head
    head.dense0.weight[0, 0], head.dense0.weight[0, 1] = 1.0, -1.0  # own brightness
    head.dense0.weight[0, 4], head.dense0.weight[0, 5] = 1.0, -1.0  # brightness brought by the attention
    head.dense0.weight[1, 2], head.dense0.weight[1, 3] = 1.0, -1.0  # constant
    head.logit_scale.bias.fill_(3.0)  # elu(3) + 1 = 4
    text = model.owlvit.text_model
    text.final_layer_norm.weight.zero_()
    text.final_layer_norm.bias[0] = 1.0
    model.owlvit.text_projection.weight.copy_(torch.eye(HIDDEN))
    grid = IMAGE_SIZE // PATCH_SIZE
    size = torch.tensor(BRIGHT_BOX_PATCHES / grid)
    model.box_head.dense2.bias[2:] = (torch.logit(size) - torch.logit(torch.tensor(1 / grid))).item()


def make_bright_object_detector() -> Tiny:
    """An OwlViTForObjectDetection (48 px, one block) constructed to detect the bright square of `bright_scene`."""
    tok = make_owl_tokenizer()
    config = _config(OwlViTConfig, tok, IMAGE_SIZE)
    config.vision_config.num_hidden_layers = 1
    model = OwlViTForObjectDetection(config).float().eval()
    _construct_bright_detector(model)
    return _round(model, owlvit_processor(tok), "owlvit-bright")
