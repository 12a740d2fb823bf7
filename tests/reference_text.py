"""Slow, independent reference for the text side (DESIGN.md section 7), written to be obviously correct.

It deep-copies the dual encoder, switches the copy to eager attention, runs the full text tower once with gradients
on and `output_attentions=True`, and takes one `torch.autograd.grad` per (text layer, prompt, image) of

    s^l_{b,k} = <normalize(text pooling of hidden_states[l + 1]_k), image_embed_b>

with respect to that layer's attention probabilities; ReLU; the edges the mask forbids (causal: key > query;
padding keys) dropped; mean over heads and over the valid query rows (real tokens and the pooled position);
summed over the layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

CAUSAL_TEXT = ("CLIPModel", "MetaClip2Model")
LAST_TOKEN_POOLING = ("SiglipModel", "Siglip2Model")
FIRST_TOKEN_POOLING = ("AltCLIPModel", "ChineseCLIPModel")


def image_embeddings(model: torch.nn.Module, pixel_kwargs: dict) -> torch.Tensor:
    """The model's own normalized image embeddings [batch, dim] (`get_image_features`)."""
    with torch.no_grad():
        features = model.get_image_features(**pixel_kwargs)
    features = getattr(features, "pooler_output", features)
    return F.normalize(features.float(), dim=-1)


def _pooled_positions(name: str, ref: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    if name in LAST_TOKEN_POOLING:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1)
    if name in FIRST_TOKEN_POOLING:
        return torch.zeros(input_ids.shape[0], dtype=torch.long)
    eos = ref.config.text_config.eos_token_id
    return torch.tensor([row.index(eos) for row in input_ids.tolist()])  # the first end-of-text token


def _text_embedding(name: str, ref: torch.nn.Module, hidden: torch.Tensor, positions: torch.Tensor):
    text_model = ref.text_model
    pooled = hidden[torch.arange(hidden.shape[0]), positions]
    if name == "AltCLIPModel":  # get_text_features: pre_LN -> transformation -> first token -> text_projection
        return F.normalize(ref.text_projection(text_model.transformation(text_model.pre_LN(pooled))), dim=-1)
    if name == "ChineseCLIPModel":  # get_text_features: first token -> text_projection
        return F.normalize(ref.text_projection(pooled), dim=-1)
    pooled = text_model.final_layer_norm(pooled)
    if name in LAST_TOKEN_POOLING:
        return F.normalize(text_model.head(pooled), dim=-1)
    return F.normalize(ref.text_projection(pooled), dim=-1)


def reference_text_relevance(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_embeds: torch.Tensor,
    layers: list[int],
    all_rows: bool = False,
) -> torch.Tensor:
    """float32 [batch, prompts, tokens]: the raw text relevance, one autograd.grad per (layer, prompt, image).

    Args:
        all_rows: a wrong variant for tests that check the masks matter: every edge and every query row counts,
            padding included (and no causal mask).
    """
    name = type(model).__name__
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    causal = name in CAUSAL_TEXT and not all_rows
    prompts, length = input_ids.shape
    real = torch.ones(prompts, length, dtype=torch.bool)
    if attention_mask is not None and not all_rows:
        real = attention_mask.bool()
    positions = _pooled_positions(name, ref, input_ids)
    extra = {"token_type_ids": torch.zeros_like(input_ids)} if name == "ChineseCLIPModel" else {}
    with torch.enable_grad():
        out = ref.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_attentions=True,
            output_hidden_states=True,
            **extra,
        )
        assert out.attentions is not None and len(out.attentions) == len(out.hidden_states) - 1
        relevance = torch.zeros(image_embeds.shape[0], prompts, length)
        for layer in layers:
            attentions = out.attentions[layer]  # [prompts, heads, queries, keys]
            embedding = _text_embedding(name, ref, out.hidden_states[layer + 1], positions)
            for k in range(prompts):
                allowed = real[k][None, :].expand(length, length).clone()
                if causal:
                    allowed &= torch.tril(torch.ones(length, length, dtype=torch.bool))
                rows = real[k].clone()
                rows[positions[k]] = True
                allowed &= rows[:, None]
                for b in range(image_embeds.shape[0]):
                    score = embedding[k] @ image_embeds[b]
                    (grad,) = torch.autograd.grad(score, attentions, retain_graph=True)
                    edge_grads = grad[k].clamp(min=0) * allowed  # [heads, queries, keys]
                    relevance[b, k] += edge_grads.sum(dim=(0, 1)) / (grad.shape[1] * rows.sum())
    return relevance
