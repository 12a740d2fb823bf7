"""The text side of a dual encoder: which tokens (and words) of a prompt make it match an image.

LeGrad on the text tower, with each image's normalized final embedding as the direction (DESIGN.md section 7):
per explained text block l, the readout is the model's own text pooling applied to that block's output Z^l, and

    s^l_{b,k} = <normalize(text readout^l_k), image_embed_b>
    R_{b,k,j} = sum over explained text blocks l of mean over heads and valid query rows of ReLU(d s^l / d A^l)[., j]

where only the attention edges the model's mask allows count (causal: key <= query; padding keys never), and the
valid query rows are the prompt's real tokens plus the pooled position (SigLIP pools the last position, which is
padding for a short prompt). The same engine computes it: `TextTrunk` makes the text tower look like a trunk
(its blocks are the text encoder layers, its forward the text tower, its per-layer readout the text pooling), and
the images' embeddings are the directions. Family knowledge (where the text blocks are, how the tower pools) is
the adapter's `text_layout` (an `adapters.base.TextLayout`), `text_pooled_positions` and `text_readout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import FamilyAdapter, TextInputs
from .adapters.base import execution_device
from .engine import layer_relevance, run_trunk


class Token(NamedTuple):
    """One position of a tokenized prompt: its decoded text, and whether it is a special (or padding) token."""

    text: str
    special: bool


@dataclass
class _TrunkSpec:
    blocks: str


class TextTrunk:
    """The text tower of a dual encoder, seen by the engine as a trunk.

    The engine asks a trunk what it asks a `FamilyAdapter`: `blocks`, `attention_projections`, `attention_values`,
    `image_features` (its forward), `layer_features` (its per-layer readout), `reads_prompts` and
    `attention_relevance_to_tokens`; here those are the text layers and their V/O projections, the text tower's
    forward with the model's own (normalized) text embedding, and the adapter's `text_readout` of a layer's output.
    """

    explains_pooling_head = False

    def __init__(self, adapter: FamilyAdapter) -> None:
        layout = getattr(adapter, "text_layout", None)
        if layout is None or not adapter.has_text_tower:
            raise TypeError(
                f"text relevance needs a dual encoder with a text tower; {type(adapter.model).__name__} "
                f"({adapter.spec.display_name}) has none the package can explain. Leave `text_relevance` off."
            )
        self.adapter, self.model, self.layout = adapter, adapter.model, layout
        self.spec = _TrunkSpec(blocks=layout.blocks)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.layout.blocks)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.text_config.num_attention_heads)

    @property
    def input_dtype(self) -> torch.dtype:
        return next(self.blocks[0].parameters()).dtype

    def attention_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module, int]:
        return block.get_submodule(self.layout.value), block.get_submodule(self.layout.output), self.num_heads

    reads_prompts = False  # the readout is the text tower's own pooling; the images are the directions

    def attention_values(self, block: nn.Module, projected: torch.Tensor) -> torch.Tensor:
        return projected  # the text towers explained here have separate V projections and one K/V head per head

    def attention_relevance_to_tokens(self, relevance: torch.Tensor, text: TextInputs) -> torch.Tensor:
        return relevance  # one sequence per prompt

    def readout_is_token_mean(self, score: str) -> bool:
        return False

    def image_features(self, text: TextInputs) -> torch.Tensor:
        """The model's own normalized text embeddings [prompts, dim] (the trunk forward)."""
        return F.normalize(self.adapter.text_features(text).float(), dim=-1)

    def layer_features(self, tokens: torch.Tensor, text: TextInputs, score: str) -> torch.Tensor:
        """The model's text pooling of one layer's output tokens [prompts, tokens, hidden], normalized."""
        positions = self.adapter.text_pooled_positions(text.input_ids).to(tokens.device)
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), positions]
        return F.normalize(self.adapter.text_readout(pooled).float(), dim=-1)

    def attention_edges(self, text: TextInputs) -> torch.Tensor:
        """bool [prompts, queries, keys]: the edges that count (see the module docstring)."""
        input_ids = text.input_ids
        prompts, length = input_ids.shape
        mask = text.attention_mask
        real = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.to(input_ids.device).bool()
        edges = real[:, None, :].expand(prompts, length, length).clone()
        if self.layout.causal:
            edges &= torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        rows = real.clone()
        rows[torch.arange(prompts, device=input_ids.device), self.adapter.text_pooled_positions(input_ids)] = True
        return edges & rows[:, :, None]


def text_relevance(
    adapter: FamilyAdapter, text: TextInputs, image_embeds: torch.Tensor, layers: list[int]
) -> torch.Tensor:
    """Raw text relevance of every prompt token, for every image.

    Args:
        adapter: a dual encoder's adapter with a `text_layout`.
        text: the tokenized prompts (with the tokenizer's attention mask).
        image_embeds: [batch, dim], the images' normalized final embeddings (the directions).
        layers: the explained text block indices.

    Returns:
        float32 [batch, prompts, tokens], summed over the explained text blocks; zero on padding positions.
    """
    trunk = TextTrunk(adapter)
    device = execution_device(trunk.blocks[0], adapter.model)
    text = TextInputs(
        input_ids=text.input_ids.to(device),
        attention_mask=None if text.attention_mask is None else text.attention_mask.to(device),
        extra={name: value.to(device) for name, value in text.extra.items()},
    )
    capture = run_trunk(trunk, text, layers)
    prompts = text.input_ids.shape[0]
    directions = image_embeds.detach().float()[None].expand(prompts, -1, -1)  # [prompts, batch, dim]
    relevance = layer_relevance(trunk, capture, text, directions, layers, attention_edges=trunk.attention_edges(text))
    return relevance.sum(dim=2).transpose(0, 1).float().cpu().contiguous()


def prompt_tokens(tokenizer, input_ids: torch.Tensor) -> list[list[Token]]:
    """The decoded token of each position of each prompt [prompts, tokens], special (and padding) ones marked.

    The unknown token counts as special: some tokenizers emit it for what is no word of the prompt (a space the
    vocabulary lacks), so an out-of-vocabulary word gets no word relevance (its token relevance stays in
    `text_relevance`).
    """
    special = set(tokenizer.all_special_ids)
    return [
        [Token(tokenizer.decode([token_id]).strip(), token_id in special) for token_id in row]
        for row in input_ids.tolist()
    ]


# Sub-word markers of the common tokenizers: SentencePiece's and byte-level BPE's word starts, WordPiece's
# continuation, and CLIP's BPE word end.
_WORD_START, _CONTINUATION, _WORD_END = ("\u2581", "\u0120"), "##", "</w>"


def word_relevance(prompts: list[str], encoded, tokens: list[list[Token]], tokenizer, relevance: torch.Tensor):
    """Merge sub-word pieces into the prompt's words, summing their relevance.

    Words are the tokenizer's own: a fast tokenizer's `word_ids` (its pre-tokenizer's words: whitespace-separated
    for CLIP's BPE, one per character for Chinese BERT), each word's text read from the prompt with its offsets; a
    slow tokenizer's pieces are merged by their sub-word markers (`▁`/`Ġ` start a word, `##` continues one, `</w>`
    ends one).

    Args:
        prompts: the K prompts.
        encoded: the tokenizer's output for them (a fast tokenizer's with `return_offsets_mapping=True`).
        tokens: `prompt_tokens` of the prompts.
        tokenizer: the tokenizer.
        relevance: [batch, K, tokens].

    Returns:
        per image, per prompt, the (word, relevance) pairs of the words that kept at least one token (a truncated
        prompt loses its tail), in prompt order.
    """
    fast = getattr(encoded, "is_fast", False) and "offset_mapping" in encoded
    per_prompt = []
    for k, prompt in enumerate(prompts):
        kept = [j for j, token in enumerate(tokens[k]) if not token.special]
        if fast:
            word_ids, offsets = encoded.word_ids(k), encoded["offset_mapping"][k].tolist()
            groups: dict[int, list[int]] = {}
            for j in kept:
                if word_ids[j] is not None:
                    groups.setdefault(word_ids[j], []).append(j)
            words = []
            for positions in groups.values():
                start, end = min(offsets[j][0] for j in positions), max(offsets[j][1] for j in positions)
                words.append((prompt[start:end].strip() or tokens[k][positions[0]].text, positions))
        else:
            words = _merge_pieces(tokenizer.convert_ids_to_tokens(encoded["input_ids"][k].tolist()), kept)
        per_prompt.append(words)
    return [
        [
            [(word, float(relevance[b, k, positions].sum())) for word, positions in words]
            for k, words in enumerate(per_prompt)
        ]
        for b in range(relevance.shape[0])
    ]


def _merge_pieces(pieces: list[str], kept: list[int]) -> list[tuple[str, list[int]]]:
    """A slow tokenizer's pieces (at the `kept` positions) merged into words by their sub-word markers: CLIP's BPE
    ends a word with `</w>`; SentencePiece and byte-level BPE start one with `▁`/`Ġ`; WordPiece continues one with
    `##`."""
    ends_marked = any(pieces[j].endswith(_WORD_END) for j in kept)
    starts_marked = any(pieces[j].startswith(_WORD_START) for j in kept)
    words: list[tuple[str, list[int]]] = []
    previous = None
    for j in kept:
        piece = pieces[j]
        if ends_marked:
            starts = previous is None or previous.endswith(_WORD_END)
        elif starts_marked:
            starts = piece.startswith(_WORD_START)
        else:
            starts = not piece.startswith(_CONTINUATION)
        text = piece.lstrip("".join(_WORD_START)).removeprefix(_CONTINUATION).removesuffix(_WORD_END)
        if starts or not words:
            words.append((text, [j]))
        else:
            words[-1] = (words[-1][0] + text, [*words[-1][1], j])
        previous = piece
    return words
