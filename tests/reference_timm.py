"""Slow, independent LeGrad reference for timm models wrapped by transformers (see `tests/reference.py`).

Deep copy in float32 with every timm attention switched to its unfused path (`fused_attn = False`), so the softmax
output passes through `attn.attn_drop` (an identity in eval) where a forward hook keeps it, in the graph; the full
trunk runs with gradients on, and each (explained layer, direction) gets its own `torch.autograd.grad`. The
readouts are written out from the timm model's own modules:

- score "legrad": `head(fc_norm(norm(mean Z)))` (DeiT distilled: the two heads averaged); `global_pool="map"`:
  timm's `attn_pool` recomputed by hand on the raw block output (CLS left out where the model leaves it out),
  differentiated w.r.t. its own attention probabilities.
- score "model": `forward_head(norm(Z))`; `global_pool="map"`: the same hand-written pool on `norm(Z)`.

A backbone's (`TimmWrapperModel`) readout is L2-normalized.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

__all__ = ["reference_layer_maps"]


def _heads(timm_model, feature: torch.Tensor) -> torch.Tensor:
    logits = timm_model.head(feature)
    if getattr(timm_model, "head_dist", None) is not None:
        logits = (logits + timm_model.head_dist(feature)) / 2
    return logits


def _attention_pool(pool, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, D], probabilities [B, H, latents, N]) of timm's AttentionPoolLatent, unfused, by hand."""
    batch, count, width = tokens.shape
    heads = pool.num_heads
    head_dim = width // heads
    if pool.pos_embed is not None:
        tokens = tokens + pool.pos_embed.unsqueeze(0)
    query = pool.q(pool.latent.expand(batch, -1, -1)).reshape(batch, -1, heads, head_dim).transpose(1, 2)
    kv = pool.kv(tokens).reshape(batch, count, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    key, value = kv[0], kv[1]
    query, key = pool.q_norm(query), pool.k_norm(key)
    probabilities = torch.softmax(query @ key.transpose(-2, -1) / head_dim**0.5, dim=-1)
    context = (probabilities @ value).transpose(1, 2).reshape(batch, -1, width)
    pooled = pool.proj(context)
    pooled = pooled + pool.mlp(pool.norm(pooled))
    return pooled[:, 0], probabilities


def _readout(wrapper, tokens: torch.Tensor, layer_probs: torch.Tensor, score: str):
    """(readout [B, F], the probabilities it is differentiated by, prefix keys to drop) of one block's tokens."""
    timm_model = wrapper.timm_model
    prefix = timm_model.num_prefix_tokens
    if timm_model.attn_pool is not None:
        keys = timm_model.norm(tokens) if score == "model" else tokens
        if not getattr(timm_model, "pool_include_prefix", True):
            keys, prefix = keys[:, prefix:], 0
        pooled, probabilities = _attention_pool(timm_model.attn_pool, keys)
        readout = _heads(timm_model, timm_model.fc_norm(pooled))
    elif score == "model":
        readout, probabilities = timm_model.forward_head(timm_model.norm(tokens)), layer_probs
    else:
        readout = _heads(timm_model, timm_model.fc_norm(timm_model.norm(tokens.mean(dim=1))))
        probabilities = layer_probs
    if type(wrapper).__name__ == "TimmWrapperModel":
        readout = F.normalize(readout, dim=-1)
    return readout, probabilities, prefix


def reference_layer_maps(
    model, pixel_values: torch.Tensor, directions: torch.Tensor, layers: list[int], score: str = "legrad"
) -> torch.Tensor:
    """Per-layer LeGrad maps float32 [B, K, layers, h, w] for `directions` [B, K, F] (one-hot rows for classes).

    The score of direction k at block l is `<readout^l, directions[:, k]>`.
    """
    ref = copy.deepcopy(model).float().eval()
    ref.requires_grad_(True)
    timm_model = ref.timm_model
    for module in timm_model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    probs, outputs = {}, {}
    for index, block in enumerate(timm_model.blocks):
        block.attn.attn_drop.register_forward_hook(lambda m, a, out, i=index: probs.__setitem__(i, out))
        block.register_forward_hook(lambda m, a, out, i=index: outputs.__setitem__(i, out))
    pixel_values = pixel_values.float()
    patch_h, patch_w = timm_model.patch_embed.patch_size
    h, w = pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w
    directions = directions.float()
    per_layer = []
    with torch.enable_grad():
        timm_model.forward_features(pixel_values)
        assert sorted(probs) == list(range(len(timm_model.blocks))), "a block ran its fused attention"
        for layer in layers:
            readout, probabilities, prefix = _readout(ref, outputs[layer], probs[layer], score)
            scores = torch.einsum("bf,bkf->bk", readout, directions)
            per_k = []
            for k in range(directions.shape[1]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), probabilities, retain_graph=True)
                per_k.append(grad.clamp(min=0).mean(dim=(1, 2))[:, prefix:])
            per_layer.append(torch.stack(per_k, dim=1))
    maps = torch.stack(per_layer, dim=2)
    return maps.reshape(*maps.shape[:3], h, w).detach()
