"""Tiny random-init models for tests, built offline and round-tripped through save_pretrained/from_pretrained.

Every factory seeds torch, builds a model from a config, saves it (with its processor) to a folder that lives
until the interpreter exits, and loads both back the way a user would load a Hub checkpoint. Models come back in
eval mode, float32, with the default attention implementation (SDPA).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

# huggingface_hub reads this when it is imported: set it before transformers pulls it in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoProcessor,
    BitImageProcessorPil,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    DeiTImageProcessorPil,
    Dinov2Config,
    Dinov2ForImageClassification,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2ImageProcessorPil,
    Siglip2Model,
    Siglip2Processor,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)

__all__ = [
    "IMAGE_SIZE",
    "LABELS",
    "NUM_LAYERS",
    "PATCH_SIZE",
    "PROMPTS",
    "Tiny",
    "make_clip",
    "make_clip_vision_with_projection",
    "make_deit",
    "make_deit_with_teacher",
    "make_dinov2",
    "make_siglip",
    "make_siglip2",
    "make_tokenizer",
    "make_vit",
    "random_image",
]

IMAGE_SIZE = 48
PATCH_SIZE = 8
NUM_LAYERS = 4
HIDDEN = 32
PROJECTION_DIM = 16
TEXT_MAX_POSITIONS = 16
# Siglip2Processor hard-codes text max_length=64 as a class default (it wins over the tokenizer's
# model_max_length), so the tiny Siglip2 text tower needs 64 positions, like the real checkpoints.
SIGLIP2_TEXT_MAX_POSITIONS = 64
SIGLIP2_MAX_NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2

LABELS = ("cat", "dog", "bird", "fish", "frog")
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple")
SHAPES = ("circle", "square", "triangle", "star", "disc", "ring")
ANIMALS = LABELS + ("horse", "cow", "sheep")
PROMPTS = (
    "a photo of a",
    *(f"a photo of a {c} {s}" for c in COLOURS for s in SHAPES),
    *(f"a photo of a {a}" for a in ANIMALS),
    *(f"a {c} {a}" for c in COLOURS for a in ANIMALS),
)

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<unk>"

VISION = dict(
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=NUM_LAYERS,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
)
TEXT = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
CLASSIFIER = dict(
    VISION,
    num_labels=len(LABELS),
    id2label=dict(enumerate(LABELS)),
    label2id={name: i for i, name in enumerate(LABELS)},
)


@dataclass
class Tiny:
    """A loaded tiny model, its processor (or image processor) and the folder both were loaded from."""

    model: Any
    processor: Any
    path: str


@functools.cache
def _root() -> str:
    root = tempfile.mkdtemp(prefix="legrad-tiny-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def _new_dir(name: str) -> str:
    return tempfile.mkdtemp(prefix=f"{name}-", dir=_root())


@functools.cache
def _trained_bpe() -> Tokenizer:
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(
        vocab_size=160,
        special_tokens=[BOS, EOS, UNK],  # ids 0, 1, 2: eos must not be 2, CLIP treats eos id 2 as "argmax id"
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz0123456789"),
        show_progress=False,
    )
    tk.train_from_iterator(PROMPTS, trainer)
    bos, eos = tk.token_to_id(BOS), tk.token_to_id(EOS)
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return tk


def make_tokenizer(model_max_length: int = TEXT_MAX_POSITIONS) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained offline on PROMPTS (bos 0, eos = pad 1, unk 2)."""
    return PreTrainedTokenizerFast(
        # A fresh copy: the wrapper sets padding/truncation state on the backend object it is given.
        tokenizer_object=Tokenizer.from_str(_trained_bpe().to_str()),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
    )


def _text_config(tok: PreTrainedTokenizerFast, max_positions: int = TEXT_MAX_POSITIONS) -> dict:
    return dict(
        TEXT,
        vocab_size=len(tok),
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


@torch.no_grad()
def _perturb_constants(model: torch.nn.Module, seed: int) -> None:
    """Give LayerNorm affines and zero-initialized biases random values.

    HF init leaves them at identity/zero; an implementation that forgot a norm's affine or a bias would then
    still match the reference. Scalars such as logit_scale/logit_bias are left alone.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=gen))
    for name, param in model.named_parameters():
        if name.endswith("bias") and param.ndim == 1 and param.numel() > 1 and not param.any():
            param.copy_(0.02 * torch.randn(param.shape, generator=gen))


def _round_trip(model: torch.nn.Module, processor: Any, name: str, *, auto_model, auto_processor) -> Tiny:
    path = _new_dir(name)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    loaded = auto_model.from_pretrained(path, local_files_only=True).eval()
    loaded_processor = auto_processor.from_pretrained(path, local_files_only=True)
    return Tiny(model=loaded, processor=loaded_processor, path=path)


def _build(model_cls, config, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = model_cls(config)
    _perturb_constants(model, seed)
    return model.float().eval()


def _clip_image_processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def _clip_config(tok: PreTrainedTokenizerFast) -> CLIPConfig:
    return CLIPConfig(text_config=_text_config(tok), vision_config=VISION, projection_dim=PROJECTION_DIM)


def make_clip(seed: int = 0) -> Tiny:
    """CLIPModel + CLIPProcessor (48x48 center crop)."""
    tok = make_tokenizer()
    model = _build(CLIPModel, _clip_config(tok), seed)
    processor = CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tok)
    return _round_trip(model, processor, "clip", auto_model=AutoModel, auto_processor=AutoProcessor)


def make_clip_vision_with_projection(seed: int = 0) -> Tiny:
    """CLIPVisionModelWithProjection + image processor, sharing make_clip(seed)'s vision tower and projection.

    So text embeddings from make_clip(seed) are meaningful for it, and both must give the same maps.
    """
    tok = make_tokenizer()
    clip = _build(CLIPModel, _clip_config(tok), seed)
    config = CLIPVisionConfig(**VISION, projection_dim=PROJECTION_DIM)
    model = CLIPVisionModelWithProjection(config).float().eval()
    # Same attribute names (vision_model.*, visual_projection.*) in both classes.
    shared = {k: v for k, v in clip.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise RuntimeError(f"CLIP vision weights did not map: missing={missing} unexpected={unexpected}")
    return _round_trip(
        model,
        _clip_image_processor(),
        "clip-vision-projection",
        auto_model=CLIPVisionModelWithProjection,
        auto_processor=AutoImageProcessor,
    )


def make_siglip(seed: int = 0) -> Tiny:
    """SiglipModel + SiglipProcessor (48x48 resize, generic BPE tokenizer; use padding="max_length")."""
    tok = make_tokenizer()
    config = SiglipConfig(text_config=_text_config(tok), vision_config=VISION)
    model = _build(SiglipModel, config, seed)
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer=tok
    )
    return _round_trip(model, processor, "siglip", auto_model=AutoModel, auto_processor=AutoProcessor)


def make_siglip2(seed: int = 0) -> Tiny:
    """Siglip2Model (NaFlex, 6x6 position grid) + Siglip2Processor (patch 8, at most 36 patches).

    Caveat (transformers 5.24): calling the Siglip2Processor itself on images applies its class defaults
    patch_size=16, max_num_patches=256, which override the image processor's saved values. Feed images
    through `processor.image_processor(...)` (or pass patch_size/max_num_patches) for this tiny model.
    """
    tok = make_tokenizer(SIGLIP2_TEXT_MAX_POSITIONS)
    config = Siglip2Config(
        text_config=_text_config(tok, SIGLIP2_TEXT_MAX_POSITIONS),
        vision_config=dict(VISION, num_patches=SIGLIP2_MAX_NUM_PATCHES),
    )
    model = _build(Siglip2Model, config, seed)
    image_processor = Siglip2ImageProcessorPil(patch_size=PATCH_SIZE, max_num_patches=SIGLIP2_MAX_NUM_PATCHES)
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tok)
    return _round_trip(model, processor, "siglip2", auto_model=AutoModel, auto_processor=AutoProcessor)


def _square(size: int = IMAGE_SIZE) -> dict:
    return {"height": size, "width": size}


def _classifier(model_cls, config_cls, image_processor, name: str, seed: int) -> Tiny:
    model = _build(model_cls, config_cls(**CLASSIFIER), seed)
    return _round_trip(
        model, image_processor, name, auto_model=AutoModelForImageClassification, auto_processor=AutoImageProcessor
    )


def make_vit(seed: int = 0) -> Tiny:
    """ViTForImageClassification (5 labels) + ViTImageProcessorPil 48x48."""
    return _classifier(ViTForImageClassification, ViTConfig, ViTImageProcessorPil(size=_square()), "vit", seed)


def make_deit(seed: int = 0) -> Tiny:
    """DeiTForImageClassification (CLS + distillation token, 5 labels) + DeiTImageProcessorPil 48x48."""
    ip = DeiTImageProcessorPil(size=_square(), crop_size=_square())
    return _classifier(DeiTForImageClassification, DeiTConfig, ip, "deit", seed)


def make_deit_with_teacher(seed: int = 0) -> Tiny:
    """DeiTForImageClassificationWithTeacher (5 labels) + DeiTImageProcessorPil 48x48."""
    ip = DeiTImageProcessorPil(size=_square(), crop_size=_square())
    return _classifier(DeiTForImageClassificationWithTeacher, DeiTConfig, ip, "deit-teacher", seed)


def make_dinov2(seed: int = 0) -> Tiny:
    """Dinov2ForImageClassification (CLS + mean-of-patches head, 5 labels) + BitImageProcessorPil 48x48."""
    ip = BitImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=_square())
    return _classifier(Dinov2ForImageClassification, Dinov2Config, ip, "dinov2", seed)


def random_image(seed: int, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> Image.Image:
    """A deterministic RGB image of size (W, H): low-amplitude noise plus one coloured disc."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = rng.normal(110.0, 25.0, size=(height, width, 3))
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    radius = rng.uniform(0.15, 0.3) * min(width, height)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    pixels[disc] = rng.uniform(0, 255, size=3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
