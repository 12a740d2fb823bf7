"""Slow, independent LeGrad reference (DESIGN.md section 2), written to be obviously correct rather than fast.

It deep-copies the model, switches the copy to eager attention, runs the full vision graph once per call with
gradients on, and takes one `torch.autograd.grad` per (explained layer, prompt/target). Everything runs in
float32 on the model's device, so it is also the ground truth for half-precision models.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import (
    CLIPModel,
    CLIPVisionModelWithProjection,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2ForImageClassification,
    Siglip2Model,
    SiglipModel,
    ViTForImageClassification,
)

__all__ = ["classifier_logits", "clip_feature", "minmax", "reference_grid_maps", "siglip_head"]

CORRECTION_THRESHOLD = 0.8

_CLIP = (CLIPModel, CLIPVisionModelWithProjection)
_SIGLIP = (SiglipModel, Siglip2Model)
_CLASSIFIERS = (
    ViTForImageClassification,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2ForImageClassification,
)


def minmax(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Min-max normalize over the last two dims per leading index; a constant map becomes zeros.

    `valid` (bool, broadcastable to x) restricts min, max and the output to those cells; others become 0.
    """
    x = x.float()
    if valid is None:
        valid = torch.ones_like(x, dtype=torch.bool)
    valid = valid.expand_as(x)
    lo = torch.where(valid, x, torch.inf).amin(dim=(-2, -1), keepdim=True)
    hi = torch.where(valid, x, -torch.inf).amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 0.0)
    return torch.where(valid, out, 0.0)


def siglip_head(head: torch.nn.Module, tokens: torch.Tensor, valid: torch.Tensor | None = None):
    """SigLIP/SigLIP2 attention-pooling head by hand: returns (pooled [B, D], probabilities [B, H, 1, N]).

    nn.MultiheadAttention's returned weights are not in the autograd graph, so the probabilities that
    multiply V are recomputed here. `valid` [B, N] (bool) masks padded tokens out of the softmax.
    """
    mha = head.attention
    batch, n, dim = tokens.shape
    heads = mha.num_heads
    head_dim = dim // heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3, dim=0)
    probe = head.probe.expand(batch, -1, -1)
    q = F.linear(probe, w_q, b_q).view(batch, 1, heads, head_dim).transpose(1, 2)
    k = F.linear(tokens, w_k, b_k).view(batch, n, heads, head_dim).transpose(1, 2)
    v = F.linear(tokens, w_v, b_v).view(batch, n, heads, head_dim).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)) * head_dim**-0.5
    if valid is not None:
        logits = logits.masked_fill(~valid[:, None, None, :], torch.finfo(logits.dtype).min)
    probs = logits.softmax(dim=-1)
    attended = mha.out_proj((probs @ v).transpose(1, 2).reshape(batch, 1, dim))
    pooled = attended + head.mlp(head.layernorm(attended))
    return pooled[:, 0], probs


def clip_feature(model: torch.nn.Module, tokens: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Unnormalized CLIP image embedding of block output tokens [B, N, D]; pooling "mean" (LeGrad) or "cls"."""
    pooled = tokens.mean(dim=1) if pooling == "mean" else tokens[:, 0]
    return model.visual_projection(model.vision_model.post_layernorm(pooled))


def classifier_logits(model: torch.nn.Module, tokens: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Class logits [B, C] of block output tokens through the model's own head.

    pooling "mean" (LeGrad): the CLS feature is replaced by final_layernorm(mean over all tokens);
    "cls" reproduces the model's own logits when given the last block's output.
    """
    if isinstance(model, Dinov2ForImageClassification):
        norm = model.dinov2.layernorm
        seq = norm(tokens)
        first = norm(tokens.mean(dim=1)) if pooling == "mean" else seq[:, 0]
        return model.classifier(torch.cat([first, seq[:, 1:].mean(dim=1)], dim=-1))
    if isinstance(model, DeiTForImageClassificationWithTeacher):
        if pooling == "mean":
            x = model.deit.layernorm(tokens.mean(dim=1))
            return (model.cls_classifier(x) + model.distillation_classifier(x)) / 2
        seq = model.deit.layernorm(tokens)
        return (model.cls_classifier(seq[:, 0]) + model.distillation_classifier(seq[:, 1])) / 2
    norm = model.deit.layernorm if isinstance(model, DeiTForImageClassification) else model.vit.layernorm
    x = norm(tokens.mean(dim=1)) if pooling == "mean" else norm(tokens)[:, 0]
    return model.classifier(x)


def _num_prefix(model: torch.nn.Module) -> int:
    if isinstance(model, _SIGLIP):
        return 0
    if isinstance(model, (DeiTForImageClassification, DeiTForImageClassificationWithTeacher)):
        return 2  # CLS + distillation token
    return 1


def _vision_config(model: torch.nn.Module):
    return model.config.vision_config if isinstance(model, (CLIPModel, *_SIGLIP)) else model.config


def _run_vision(model: torch.nn.Module, pixel_inputs: dict):
    """Full vision forward with eager attentions and all hidden states, plus per-image (h, w) grids."""
    config = _vision_config(model)
    pixel_values = pixel_inputs["pixel_values"].float()
    batch = pixel_values.shape[0]
    flags = dict(output_attentions=True, output_hidden_states=True)
    if isinstance(model, Siglip2Model):
        shapes = [tuple(int(s) for s in hw) for hw in pixel_inputs["spatial_shapes"]]
        out = model.vision_model(
            pixel_values=pixel_values,
            pixel_attention_mask=pixel_inputs["pixel_attention_mask"],
            spatial_shapes=pixel_inputs["spatial_shapes"],
            **flags,
        )
        return out, shapes
    size = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
    height, width = pixel_values.shape[-2:]
    patch = config.patch_size
    shapes = [(height // patch, width // patch)] * batch
    if isinstance(model, Dinov2ForImageClassification):
        return model.dinov2(pixel_values, **flags), shapes  # Dinov2 always interpolates positions
    interpolate = (height, width) != tuple(size)
    if isinstance(model, ViTForImageClassification):
        trunk = model.vit
    elif isinstance(model, (DeiTForImageClassification, DeiTForImageClassificationWithTeacher)):
        trunk = model.deit
    else:  # CLIPModel, CLIPVisionModelWithProjection, SiglipModel
        trunk = model.vision_model
    return trunk(pixel_values=pixel_values, interpolate_pos_encoding=interpolate, **flags), shapes


def _layer_scores(model, tokens, embeds, targets, valid):
    """Per-layer scores [B, K] of one block's output tokens, and the attention probabilities (SigLIP head)."""
    if isinstance(model, _CLIP):
        feature = F.normalize(clip_feature(model, tokens, "mean"), dim=-1)
        return feature @ embeds.T, None
    if isinstance(model, _SIGLIP):
        # The head is applied to the raw block output: no post_layernorm (authors' code).
        pooled, probs = siglip_head(model.vision_model.head, tokens, valid)
        return F.normalize(pooled, dim=-1) @ embeds.T, probs
    logits = classifier_logits(model, tokens, "mean")
    return logits.gather(1, targets), None


def _summed_maps(model, out, shapes, layers, embeds, targets, valid) -> torch.Tensor:
    """Sum over `layers` of ReLU(dS/dA) averaged over heads and queries: [B, K, N_keys], prefix dropped."""
    prefix = _num_prefix(model)
    total = None
    for layer in layers:
        tokens = out.hidden_states[layer + 1]
        scores, head_probs = _layer_scores(model, tokens, embeds, targets, valid)
        probs = head_probs if head_probs is not None else out.attentions[layer]
        per_k = []
        for k in range(scores.shape[1]):
            # Images are independent, so the gradient of the batch sum is each image's own gradient.
            (grad,) = torch.autograd.grad(scores[:, k].sum(), probs, retain_graph=True)
            per_k.append(grad.clamp(min=0).mean(dim=1).mean(dim=1)[:, prefix:])
        maps = torch.stack(per_k, dim=1)
        total = maps if total is None else total + maps
    return total


def _to_grid(flat: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """[B, K, N] patch keys (row-major) -> [B, K, max h, max w], zeros outside each image's own grid."""
    batch, k, n = flat.shape
    if len(set(shapes)) == 1:
        assert n == shapes[0][0] * shapes[0][1], (n, shapes)  # fixed-size inputs: every key is a patch
    grid = flat.new_zeros(batch, k, max(h for h, _ in shapes), max(w for _, w in shapes))
    for b, (h, w) in enumerate(shapes):
        grid[b, :, :h, :w] = flat[b, :, : h * w].reshape(k, h, w)
    return grid


def _valid_grid(shapes: list[tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    valid = torch.zeros(like.shape[0], 1, *like.shape[-2:], dtype=torch.bool, device=like.device)
    for b, (h, w) in enumerate(shapes):
        valid[b, :, :h, :w] = True
    return valid


def reference_grid_maps(
    model: torch.nn.Module,
    pixel_inputs: dict,
    *,
    text_embeds: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    layers: list[int],
    correction: bool = False,
    null_text_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """LeGrad grid maps, float32 [B, K, h, w] (raw layer sums, SigLIP correction applied when asked).

    Dual encoders take `text_embeds` [K, D]; classifiers take `targets` [B, K] class ids. For Siglip2 the
    grid is [max h, max w] over the batch and cells outside an image's own grid are 0.
    """
    if not isinstance(model, (*_CLIP, *_SIGLIP, *_CLASSIFIERS)):
        raise TypeError(f"no reference for {type(model).__name__}")
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    ref.requires_grad_(True)  # the attentions must be in the graph even if the caller froze the model
    num_layers = _vision_config(ref).num_hidden_layers
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < num_layers for i in layers):
        raise ValueError(f"layers must be distinct indices in [0, {num_layers}), got {layers}")
    if correction and not isinstance(ref, _SIGLIP):
        raise ValueError("the correction is only defined for SigLIP/SigLIP2")
    device = next(ref.parameters()).device
    pixel_inputs = {k: v.to(device) for k, v in pixel_inputs.items()}

    embeds = null = None
    if isinstance(ref, (*_CLIP, *_SIGLIP)):
        if text_embeds is None:
            raise ValueError("dual encoders need text_embeds")
        embeds = F.normalize(text_embeds.detach().float().to(device), dim=-1)
        if correction:
            if null_text_embeds is None:
                raise ValueError("correction needs null_text_embeds")
            null = F.normalize(null_text_embeds.detach().float().to(device), dim=-1)
    elif targets is None:
        raise ValueError("classifiers need targets")
    else:
        targets = targets.to(device=device, dtype=torch.long)

    with torch.enable_grad():
        out, shapes = _run_vision(ref, pixel_inputs)
        valid_tokens = None
        if isinstance(ref, Siglip2Model):
            valid_tokens = pixel_inputs["pixel_attention_mask"].bool()
            for b, (h, w) in enumerate(shapes):
                # The processor puts the h*w real patches first; the reshape below relies on it.
                assert bool(valid_tokens[b, : h * w].all()) and not bool(valid_tokens[b, h * w :].any())
        grid = _to_grid(_summed_maps(ref, out, shapes, layers, embeds, targets, valid_tokens), shapes)
        if null is not None:
            null_grid = _to_grid(_summed_maps(ref, out, shapes, layers, null, None, valid_tokens), shapes)
            null_norm = minmax(null_grid, _valid_grid(shapes, null_grid))
            grid = torch.where(null_norm > CORRECTION_THRESHOLD, 0.0, grid)
    return grid.detach().float()
