"""Tiny random MetaCLIP 2, AltCLIP and Chinese CLIP models (CLIP's vision layout), built offline.

Each factory builds a model from a small config (the vision tower of `tiny_models.VISION`: hidden 32, 4 layers,
4 heads, patch 8, 48 px), perturbs its LayerNorm affines and zero biases, and round-trips it with its processor
through save_pretrained/from_pretrained, as `tiny_models` does. The text towers get their own offline
tokenizers: a Unigram vocabulary of the prompts' words in `XLMRobertaTokenizer` (MetaCLIP 2, AltCLIP) and a
WordPiece vocabulary of the prompts' words in `BertTokenizer` (Chinese CLIP).
"""

from __future__ import annotations

import functools

from transformers import (
    AltCLIPConfig,
    AltCLIPModel,
    AltCLIPProcessor,
    AutoImageProcessor,
    AutoModel,
    AutoProcessor,
    BertTokenizer,
    ChineseCLIPConfig,
    ChineseCLIPImageProcessorPil,
    ChineseCLIPModel,
    ChineseCLIPProcessor,
    CLIPProcessor,
    MetaClip2Config,
    MetaClip2Model,
    MetaClip2VisionConfig,
    MetaClip2VisionModelWithProjection,
    XLMRobertaTokenizer,
)

from tiny_models import (
    IMAGE_SIZE,
    PROJECTION_DIM,
    PROMPTS,
    TEXT,
    TEXT_MAX_POSITIONS,
    VISION,
    Tiny,
    _build,
    _clip_image_processor,
    _round_trip,
)

__all__ = [
    "make_altclip",
    "make_chinese_clip",
    "make_metaclip2",
    "make_metaclip2_vision_with_projection",
    "make_wordpiece_tokenizer",
    "make_xlm_roberta_tokenizer",
]

XLM_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0-4, as in XLM-R: bos 0, pad 1, eos 2, unk 3
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # pad 0, as Chinese CLIP's config expects
ALTCLIP_PROJECT_DIM = 24  # AltCLIP's text `transformation` width, distinct from the hidden size to catch mix-ups


@functools.cache
def _unigram_vocab() -> tuple[tuple[str, float], ...]:
    """XLM-R's special tokens, then every word of PROMPTS as a whole piece (preferred) and every character (so any
    text tokenizes): a SentencePiece-style Unigram vocabulary of log-probability scores."""
    words = sorted({word for prompt in PROMPTS for word in prompt.split()})
    characters = sorted({character for word in words for character in word})
    pieces = [(f"▁{word}", -1.0 - 0.01 * len(word)) for word in words]
    pieces += [("▁", -8.0)] + [(character, -10.0) for character in characters]
    return tuple((special, 0.0) for special in XLM_SPECIALS) + tuple(pieces)


def make_xlm_roberta_tokenizer(model_max_length: int = TEXT_MAX_POSITIONS) -> XLMRobertaTokenizer:
    """An `XLMRobertaTokenizer` over a small Unigram vocabulary of PROMPTS' words (bos 0, pad 1, eos 2)."""
    return XLMRobertaTokenizer(vocab=list(_unigram_vocab()), model_max_length=model_max_length)


@functools.cache
def _wordpiece_vocab() -> tuple[tuple[str, int], ...]:
    """BERT's special tokens, then every word of PROMPTS as a whole piece and every character as a first and a
    continuation (`##`) piece, so any lowercase text tokenizes: sorted, so the ids are the same in every process
    (a trained WordPiece vocabulary is not: the trainer breaks ties in hash-map order)."""
    words = sorted({word for prompt in PROMPTS for word in prompt.lower().split()})
    characters = sorted({character for word in words for character in word})
    pieces = [*BERT_SPECIALS, *words, *(c for c in characters if c not in words), *(f"##{c}" for c in characters)]
    return tuple((piece, index) for index, piece in enumerate(pieces))


def make_wordpiece_tokenizer(model_max_length: int = TEXT_MAX_POSITIONS) -> BertTokenizer:
    """A `BertTokenizer` over a small WordPiece vocabulary of PROMPTS' words ([PAD] 0, [CLS] 2, [SEP] 3)."""
    return BertTokenizer(vocab=dict(_wordpiece_vocab()), model_max_length=model_max_length)


def _xlm_text_config(tok: XLMRobertaTokenizer, max_positions: int = TEXT_MAX_POSITIONS) -> dict:
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return dict(TEXT, vocab_size=len(tok), max_position_embeddings=max_positions, **ids)


def _metaclip2_config() -> MetaClip2Config:
    tok = make_xlm_roberta_tokenizer()
    return MetaClip2Config(text_config=_xlm_text_config(tok), vision_config=VISION, projection_dim=PROJECTION_DIM)


def make_metaclip2(seed: int = 0) -> Tiny:
    """MetaClip2Model + CLIPProcessor (48x48 center crop, XLM-R Unigram tokenizer)."""
    model = _build(MetaClip2Model, _metaclip2_config(), seed)
    processor = CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=make_xlm_roberta_tokenizer())
    return _round_trip(model, processor, "metaclip2", auto_model=AutoModel, auto_processor=AutoProcessor)


def make_metaclip2_vision_with_projection(seed: int = 0) -> Tiny:
    """MetaClip2VisionModelWithProjection + image processor, sharing make_metaclip2(seed)'s vision tower and
    projection, so make_metaclip2(seed)'s text embeddings are meaningful for it and both give the same maps."""
    dual = _build(MetaClip2Model, _metaclip2_config(), seed)
    model = MetaClip2VisionModelWithProjection(MetaClip2VisionConfig(**VISION, projection_dim=PROJECTION_DIM))
    shared = {k: v for k, v in dual.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise RuntimeError(f"MetaCLIP 2 vision weights did not map: missing={missing} unexpected={unexpected}")
    return _round_trip(
        model.float().eval(),
        _clip_image_processor(),
        "metaclip2-vision-projection",
        auto_model=MetaClip2VisionModelWithProjection,
        auto_processor=AutoImageProcessor,
    )


def make_altclip(seed: int = 0) -> Tiny:
    """AltCLIPModel (XLM-R text tower, 2 position slots for RoBERTa's offset) + AltCLIPProcessor (48x48 crop)."""
    tok = make_xlm_roberta_tokenizer()
    text = dict(_xlm_text_config(tok, TEXT_MAX_POSITIONS + tok.pad_token_id + 1), project_dim=ALTCLIP_PROJECT_DIM)
    config = AltCLIPConfig(text_config=text, vision_config=VISION, projection_dim=PROJECTION_DIM)
    model = _build(AltCLIPModel, config, seed)
    processor = AltCLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tok)
    return _round_trip(model, processor, "altclip", auto_model=AutoModel, auto_processor=AutoProcessor)


def make_chinese_clip(seed: int = 0) -> Tiny:
    """ChineseCLIPModel (BERT text tower with token types) + ChineseCLIPProcessor (48x48 resize, no crop)."""
    tok = make_wordpiece_tokenizer()
    text = dict(
        TEXT,
        vocab_size=len(tok),
        max_position_embeddings=TEXT_MAX_POSITIONS,
        pad_token_id=tok.pad_token_id,
        type_vocab_size=2,
    )
    config = ChineseCLIPConfig(text_config=text, vision_config=VISION, projection_dim=PROJECTION_DIM)
    model = _build(ChineseCLIPModel, config, seed)
    image_processor = ChineseCLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False
    )
    processor = ChineseCLIPProcessor(image_processor=image_processor, tokenizer=tok)
    return _round_trip(model, processor, "chinese-clip", auto_model=AutoModel, auto_processor=AutoProcessor)
