"""Slow, independent LeGrad reference for backbones explained along directions (see `tests/reference.py`).

Deep copy in float32, eager attention, the full vision graph with gradients on, one `torch.autograd.grad` per
(explained layer, direction). The readouts are written out from the models' own modules:

- score "legrad": `normalize(final_norm(mean Z))`; SigLIP with head: `normalize(head(Z))` on the raw tokens,
  differentiated w.r.t. the head's own attention probabilities (recomputed by hand).
- score "model": `normalize(final_norm(Z)[:, 0])`; SigLIP: `normalize(head(post_layernorm(Z)))`, without a head
  `normalize(mean(post_layernorm(Z)))`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel, DINOv3ViTModel, SiglipVisionModel

from reference import siglip_head

__all__ = ["pooled_embedding", "reference_grid_maps"]


def _final_norm(model):
    if isinstance(model, (CLIPVisionModel, SiglipVisionModel)):
        return model.post_layernorm
    if isinstance(model, DINOv3ViTModel):
        return model.norm
    return model.layernorm


def _num_prefix(model) -> int:
    if isinstance(model, SiglipVisionModel):
        return 0
    return 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)


def _has_head(model) -> bool:
    return isinstance(model, SiglipVisionModel) and getattr(model, "head", None) is not None


def pooled_embedding(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's own pooled feature of its forward, L2-normalized: [batch, dim] (what a reference image gives)."""
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    if isinstance(model, CLIPVisionModel) or _has_head(model):
        pooled = out.pooler_output
    elif isinstance(model, SiglipVisionModel):
        pooled = out.last_hidden_state.mean(dim=1)
    else:  # ViT, DINOv2, DINOv3: the CLS token after the final norm (ViT's tanh pooler is not the feature)
        pooled = out.last_hidden_state[:, 0]
    return F.normalize(pooled.float(), dim=-1)


def _readout(model, tokens: torch.Tensor, score: str):
    """(normalized readout [B, D], head probabilities [B, H, 1, N] or None) of one block's output tokens."""
    norm = _final_norm(model)
    if _has_head(model):
        pooled, probs = siglip_head(model.head, norm(tokens) if score == "model" else tokens)
        return F.normalize(pooled, dim=-1), probs
    if score == "legrad":
        return F.normalize(norm(tokens.mean(dim=1)), dim=-1), None
    if isinstance(model, SiglipVisionModel):
        return F.normalize(norm(tokens).mean(dim=1), dim=-1), None
    return F.normalize(norm(tokens)[:, 0], dim=-1), None


def reference_grid_maps(
    model, pixel_values: torch.Tensor, directions: torch.Tensor, layers: list[int], score: str = "legrad"
) -> torch.Tensor:
    """LeGrad grid maps float32 [B, K, h, w] of `directions` [K, D] (normalized here), summed over `layers`."""
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    ref.requires_grad_(True)
    directions = F.normalize(directions.detach().float(), dim=-1)
    pixel_values = pixel_values.float()
    patch = ref.config.patch_size
    h, w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    prefix = _num_prefix(ref)
    with torch.enable_grad():
        out = ref(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
        assert len(out.hidden_states) == ref.config.num_hidden_layers + 1
        total = 0
        for layer in layers:
            readout, head_probs = _readout(ref, out.hidden_states[layer + 1], score)
            probs = head_probs if head_probs is not None else out.attentions[layer]
            scores = readout @ directions.T
            per_k = []
            for k in range(directions.shape[0]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), probs, retain_graph=True)
                per_k.append(grad.clamp(min=0).mean(dim=(1, 2))[:, prefix:])
            total = total + torch.stack(per_k, dim=1)
    return total.reshape(total.shape[0], total.shape[1], h, w).detach()
