"""The text side: `explain(..., text_relevance=True)` against the independent reference of `reference_text.py`.

Raw text relevance (summed over the explained text blocks) must equal the reference for CLIP (causal mask, EOS
pooling), SigLIP (padding="max_length", last-token pooling and head), SigLIP 2, MetaCLIP 2, AltCLIP (XLM-R) and
Chinese CLIP (BERT), for a batch of 2
images x 3 prompts of different lengths (one truncated); padding positions are zero, sub-word pieces merge into
words, and the image side is unchanged.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import pipeline

from transformers_legrad import LeGradExplainer, visualize
from transformers_legrad.cli import main

from reference_text import image_embeddings, reference_text_relevance
from test_exact import assert_raw_close
from tiny_clip_layout import make_altclip, make_chinese_clip, make_metaclip2
from tiny_models import random_image

# Different lengths (padding), a word the tiny BPE splits ("zebrafish" is not in its training prompts), and a
# prompt longer than the tiny text towers' positions (truncated).
PROMPTS = [
    "a photo of a red circle",
    "zebrafish",
    "a photo of a blue square next to a green triangle and a red circle on a yellow cat",
]


def _explain(tiny, images, **kwargs):
    explainer = LeGradExplainer(tiny.model, tiny.processor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long prompt is truncated on purpose
        return explainer, explainer.explain(images, PROMPTS, text_relevance=True, **kwargs)


def _reference(explainer, tiny, images, out, **kwargs) -> torch.Tensor:
    tokenizer = explainer._tokenizer
    encoded = tokenizer(PROMPTS, return_tensors="pt", **explainer.adapter.tokenizer_kwargs(tokenizer))
    pixels = explainer.prepare_request(images, PROMPTS).pixels
    embeds = image_embeddings(tiny.model, pixels.model_kwargs)
    return reference_text_relevance(
        tiny.model, encoded["input_ids"], encoded.get("attention_mask"), embeds, out.explained_text_layers, **kwargs
    ), encoded


@pytest.fixture(scope="module")
def metaclip2():
    return make_metaclip2()


@pytest.fixture(scope="module")
def altclip():
    return make_altclip()


@pytest.fixture(scope="module")
def chinese_clip():
    return make_chinese_clip()


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2", "metaclip2", "altclip", "chinese_clip"])
def test_text_relevance_matches_reference(family, request):
    tiny = request.getfixturevalue(family)
    images = [random_image(0), random_image(1)]
    explainer, out = _explain(tiny, images)
    ref, encoded = _reference(explainer, tiny, images, out)
    assert out.text_relevance.dtype == torch.float32
    assert out.text_relevance.shape == (2, len(PROMPTS), encoded["input_ids"].shape[1])
    assert_raw_close(out.text_relevance, ref)
    mask = encoded.get("attention_mask")
    if mask is not None:  # padding positions carry no relevance
        assert mask.min() == 0, "the prompts should need padding"
        assert (out.text_relevance[:, ~mask.bool()] == 0).all()
    assert len(out.text_tokens) == len(PROMPTS)
    assert all(len(tokens) == encoded["input_ids"].shape[1] for tokens in out.text_tokens)
    special = set(explainer._tokenizer.all_special_ids)
    for tokens, ids in zip(out.text_tokens, encoded["input_ids"].tolist(), strict=True):
        assert [token.special for token in tokens] == [i in special for i in ids]
    assert [token.text for token in out.text_tokens[0] if not token.special] == PROMPTS[0].split()


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_scaled_or_unmasked_relevance_fails_the_comparison(family, request):
    """The comparison can fail: a 1.5x relevance, or one whose mean runs over every query row and edge, padding
    included. (CLIP's causal mask alone cannot change the result: each layer's score reads only the pooled EOS
    row, the last real token, which may attend to every real token.)"""
    clip = request.getfixturevalue(family)
    images = [random_image(0), random_image(1)]
    explainer, out = _explain(clip, images)
    ref, _ = _reference(explainer, clip, images, out)
    with pytest.raises(AssertionError):
        assert_raw_close(out.text_relevance * 1.5, ref)
    unmasked, _ = _reference(explainer, clip, images, out, all_rows=True)
    with pytest.raises(AssertionError):
        assert_raw_close(out.text_relevance, unmasked)


def test_text_layers_choose_the_blocks(clip):
    images = [random_image(0)]
    explainer, last = _explain(clip, images, text_layers=[-1])
    _, both = _explain(clip, images, text_layers="all")
    assert last.explained_text_layers == [1] and both.explained_text_layers == [0, 1]
    ref, _ = _reference(explainer, clip, images, last)
    assert_raw_close(last.text_relevance, ref)
    with pytest.raises(ValueError, match="blocks 0..1"):
        _explain(clip, images, text_layers=[5])


def test_word_relevance_merges_pieces(clip):
    images = [random_image(0), random_image(1)]
    _, out = _explain(clip, images)
    pieces = [token for token in out.text_tokens[1] if not token.special]
    assert len(pieces) > 1, "the tiny BPE should split 'zebrafish'"
    for b in range(2):
        ((word, value),) = out.word_relevance[b][1]
        assert word == "zebrafish"
        pieces_at = [j for j, token in enumerate(out.text_tokens[1]) if not token.special]
        assert value == pytest.approx(float(out.text_relevance[b, 1, pieces_at].sum()), rel=1e-5)
        words = [word for word, _ in out.word_relevance[b][0]]
        assert words == PROMPTS[0].split()
        # the truncated prompt keeps only the words that still have tokens, in order
        kept = [word for word, _ in out.word_relevance[b][2]]
        assert kept == PROMPTS[2].split()[: len(kept)] and len(kept) < len(PROMPTS[2].split())


def test_image_side_unchanged(clip, siglip):
    images = [random_image(0), random_image(1)]
    for tiny in (clip, siglip):
        explainer, with_text = _explain(tiny, images, return_layer_maps=True)
        plain = explainer.explain(images, PROMPTS, return_layer_maps=True)
        assert plain.text_relevance is None and plain.word_relevance is None
        for name in ("heatmaps", "grid_maps", "layer_maps", "scores", "probabilities"):
            assert torch.equal(getattr(plain, name), getattr(with_text, name)), name


def test_text_relevance_needs_prompts(clip, vit):
    explainer = LeGradExplainer(clip.model, clip.processor)
    embeds = torch.randn(2, explainer.adapter.embedding_dim)
    with pytest.raises(ValueError, match="text=\\[...\\]"):
        explainer.explain([random_image(0)], text_embeds=embeds, text_relevance=True)
    with pytest.raises(ValueError, match="dual encoder"):
        LeGradExplainer(vit.model, vit.processor).explain([random_image(0)], text_relevance=True)


def test_pipeline_words_match_the_explainer(clip):
    pipe = pipeline("legrad-explanation", model=clip.path, batch_size=2)
    images = [random_image(0), random_image(1)]
    labels = ["a red circle", "zebrafish"]
    results = pipe(images, candidate_labels=labels, text_relevance=True)
    out = LeGradExplainer(clip.model, clip.processor).explain(images, labels, text_relevance=True)
    for b, entries in enumerate(results):
        for entry in entries:
            k = labels.index(entry["label"])
            expected = [{"word": w, "relevance": pytest.approx(v, rel=1e-4)} for w, v in out.word_relevance[b][k]]
            assert entry["words"] == expected
    assert all("words" not in entry for entry in pipe(images[0], candidate_labels=labels))


def test_cli_writes_words(clip, tmp_path, capsys):
    random_image(3).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    argv = ["explain", tmp_path / "scene.png", "--model", clip.path, "--prompt", "a red circle", "--out", out]
    assert main([str(a) for a in [*argv, "--text-relevance"]]) == 0
    (record,) = json.loads((out / "results.json").read_text())
    assert [item["word"] for item in record["words"]] == ["a", "red", "circle"]
    assert all(isinstance(item["relevance"], float) for item in record["words"])
    assert main([str(a) for a in argv]) == 0
    assert "words" not in json.loads((out / "results.json").read_text())[0]


def test_grid_shades_the_words(clip):
    image = random_image(0)
    _, out = _explain(clip, [image])
    labels = PROMPTS[:2]
    maps = out.heatmaps[0, :2]
    plain = visualize.grid_figure(image, maps, labels)
    shaded = visualize.grid_figure(image, maps, labels, words=out.word_relevance[0][:2])
    assert shaded.size == plain.size
    pixels = np.asarray(shaded).reshape(-1, 3).astype(int)
    amber = (pixels[:, 0] == 255) & (pixels[:, 1] == 170) & (pixels[:, 2] == 40)
    assert amber.sum() > 0, "the most relevant word of each prompt gets the full shade"
    assert np.array_equal(np.asarray(plain), np.asarray(visualize.grid_figure(image, maps, labels, words=None)))
    with pytest.raises(ValueError, match="one list of"):
        visualize.grid_figure(image, maps, labels, words=out.word_relevance[0][:1])


def test_words_are_the_tokenizer_own_words_for_a_fast_tokenizer():
    """Chinese has no spaces: BERT's pre-tokenizer makes each character a word, and so does `word_relevance`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from transformers_legrad import text_side

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "一", "只", "猫", "的", "照", "片", "a", "zebra", "##fish"]
    backend = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer, backend.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    prompts = ["一只猫的照片", "a zebrafish"]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, return_offsets_mapping=True)
    tokens = text_side.prompt_tokens(tokenizer, encoded["input_ids"])
    relevance = torch.arange(encoded["input_ids"].numel(), dtype=torch.float32).view(1, *encoded["input_ids"].shape)
    words = text_side.word_relevance(prompts, encoded, tokens, tokenizer, relevance)[0]
    assert [word for word, _ in words[0]] == list("一只猫的照片")
    assert [value for _, value in words[0]] == [float(relevance[0, 0, j]) for j in range(6)]
    assert words[1] == [("a", float(relevance[0, 1, 0])), ("zebrafish", float(relevance[0, 1, 1] + relevance[0, 1, 2]))]


@pytest.mark.parametrize(
    "pieces, expected",
    [
        (["\u2581a", "\u2581zebra", "fish"], [("a", [0]), ("zebrafish", [1, 2])]),  # SentencePiece (SigLIP)
        (["a</w>", "zebra", "fish</w>"], [("a", [0]), ("zebrafish", [1, 2])]),  # CLIP's BPE
        (["a", "zebra", "##fish"], [("a", [0]), ("zebrafish", [1, 2])]),  # WordPiece
    ],
)
def test_a_slow_tokenizer_pieces_are_merged_by_their_markers(pieces, expected):
    from transformers_legrad.text_side import _merge_pieces

    assert _merge_pieces(pieces, list(range(len(pieces)))) == expected
