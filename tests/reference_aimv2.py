"""Slow, independent LeGrad reference for AIMv2 (`Aimv2Model`, `Aimv2VisionModel`), written to be obviously correct.

It deep-copies the model in float32 with eager attention, runs the full graph with gradients on and
`output_attentions=True`, and takes one `torch.autograd.grad` per (explained layer, prompt or direction). Readouts of
block l's output tokens Z (hidden_states[l + 1]):

- with the attention-pooling head: `head(rms_norm(Z))`, the head written out with explicit softmax probabilities
  (its `cls_token` is the query as it is, no projection), then `visual_projection` for `Aimv2Model`; the gradient is
  taken w.r.t. those head probabilities [B, H, 1, N];
- without a head: `rms_norm(mean Z)` (score "legrad") or `mean(rms_norm(Z))` (score "model"); the gradient is taken
  w.r.t. block l's own self-attention probabilities.

The text side: `s^l_{b,k} = <normalize(text_projection(rms_norm(Z^l_k[first eos]))), image_embed_b>`, w.r.t. text
layer l's probabilities, over the edges the causal and padding masks allow, mean over heads and valid query rows.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import Aimv2Model

__all__ = ["aimv2_head", "reference_grid_maps", "reference_text_relevance", "vision_tower"]


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    return model.vision_model if isinstance(model, Aimv2Model) else model


def aimv2_head(head: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`Aimv2AttentionPoolingHead` by hand: (pooled [B, D], probabilities [B, H, 1, N])."""
    batch, n, dim = tokens.shape
    heads = head.num_heads
    head_dim = dim // heads
    q = head.cls_token.expand(batch, -1, -1).reshape(batch, 1, heads, head_dim).transpose(1, 2)
    k = head.k_proj(tokens).reshape(batch, n, heads, head_dim).transpose(1, 2)
    v = head.v_proj(tokens).reshape(batch, n, heads, head_dim).transpose(1, 2)
    probs = torch.softmax((q @ k.transpose(-1, -2)) / head_dim**0.5, dim=-1)
    context = (probs @ v).transpose(1, 2).reshape(batch, 1, dim)
    return head.output_proj(context)[:, 0], probs


def _readout(model, tokens: torch.Tensor, score: str, raw_tokens: bool):
    """(normalized readout [B, F], head probabilities or None) of one block's output tokens."""
    tower = vision_tower(model)
    if getattr(tower, "head", None) is not None:
        pooled, probs = aimv2_head(tower.head, tokens if raw_tokens else tower.rms_norm(tokens))
        if isinstance(model, Aimv2Model):
            pooled = model.visual_projection(pooled)
        return F.normalize(pooled, dim=-1), probs
    pooled = tower.rms_norm(tokens.mean(dim=1)) if score == "legrad" else tower.rms_norm(tokens).mean(dim=1)
    return F.normalize(pooled, dim=-1), None


def reference_grid_maps(
    model,
    pixel_values: torch.Tensor,
    directions: torch.Tensor,
    layers: list[int],
    score: str = "legrad",
    raw_tokens: bool = False,
) -> torch.Tensor:
    """LeGrad grid maps float32 [B, K, h, w] of `directions` [K, F] (normalized here), summed over `layers`.

    Args:
        raw_tokens: a variant for tests that check the readout's norm matters: the head reads the raw block output.
    """
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    ref.requires_grad_(True)
    tower = vision_tower(ref)
    directions = F.normalize(directions.detach().float(), dim=-1)
    pixel_values = pixel_values.float()
    patch = tower.config.patch_size
    h, w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    with torch.enable_grad():
        out = tower(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
        assert len(out.hidden_states) == tower.config.num_hidden_layers + 1
        total = 0
        for layer in layers:
            readout, head_probs = _readout(ref, out.hidden_states[layer + 1], score, raw_tokens)
            probs = head_probs if head_probs is not None else out.attentions[layer]
            scores = readout @ directions.T
            per_k = []
            for k in range(directions.shape[0]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), probs, retain_graph=True)
                per_k.append(grad.clamp(min=0).mean(dim=(1, 2)))  # no prefix token to drop
            total = total + torch.stack(per_k, dim=1)
    return total.reshape(total.shape[0], total.shape[1], h, w).detach()


def reference_text_relevance(
    model: Aimv2Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_embeds: torch.Tensor,
    layers: list[int],
) -> torch.Tensor:
    """float32 [batch, prompts, tokens]: raw text relevance, one autograd.grad per (layer, prompt, image)."""
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    prompts, length = input_ids.shape
    real = attention_mask.bool()
    eos = ref.config.text_config.eos_token_id
    positions = torch.tensor([row.index(eos) for row in input_ids.tolist()])  # the first end-of-text token
    with torch.enable_grad():
        out = ref.text_model(
            input_ids=input_ids, attention_mask=attention_mask, output_attentions=True, output_hidden_states=True
        )
        relevance = torch.zeros(image_embeds.shape[0], prompts, length)
        for layer in layers:
            attentions = out.attentions[layer]  # [prompts, heads, queries, keys]
            pooled = out.hidden_states[layer + 1][torch.arange(prompts), positions]
            embedding = F.normalize(ref.text_projection(ref.text_model.rms_norm(pooled)), dim=-1)
            for k in range(prompts):
                allowed = real[k][None, :].expand(length, length) & torch.ones(length, length).tril().bool()
                rows = real[k].clone()
                rows[positions[k]] = True
                allowed = allowed & rows[:, None]
                for b in range(image_embeds.shape[0]):
                    (grad,) = torch.autograd.grad(embedding[k] @ image_embeds[b], attentions, retain_graph=True)
                    edge_grads = grad[k].clamp(min=0) * allowed  # [heads, queries, keys]
                    relevance[b, k] += edge_grads.sum(dim=(0, 1)) / (grad.shape[1] * rows.sum())
    return relevance
