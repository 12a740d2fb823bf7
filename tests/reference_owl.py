"""Slow, independent LeGrad reference for OWL-ViT / OWLv2 detections, written to be obviously correct.

It deep-copies the model, switches the copy to eager attention, runs the full vision graph once with gradients on
and every attention returned, recomputes the class head by hand from each explained block's output tokens, and
takes one `torch.autograd.grad` per (explained layer, explained (box, query) pair) with respect to that block's
attention probabilities.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["class_logits", "reference_detection_maps"]


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return model.owlvit if hasattr(model, "owlvit") else model.owlv2


def class_logits(model: torch.nn.Module, tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Logits [B, patches, queries] of block output tokens [B, N, D] against query embeddings [Q, D], by hand."""
    embeds = _base(model).vision_model.post_layernorm(tokens)
    merged = model.layer_norm(embeds[:, 1:] * embeds[:, :1])
    head = model.class_head
    image_class = head.dense0(merged)
    image_class = image_class / (image_class.norm(dim=-1, keepdim=True) + 1e-6)
    text = queries / (queries.norm(dim=-1, keepdim=True) + 1e-6)
    logits = image_class @ text.T
    shift = head.logit_shift(merged)
    scale = torch.nn.functional.elu(head.logit_scale(merged)) + 1
    return (logits + shift) * scale


def reference_detection_maps(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    queries: torch.Tensor,
    box_ids: torch.Tensor,
    query_ids: torch.Tensor,
    layers: list[int],
) -> torch.Tensor:
    """Per-layer LeGrad maps float32 [B, maps, layers, h, w] of the (box, query) pairs [B, maps] (-1: all zero)."""
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    ref.requires_grad_(True)
    config = ref.config.vision_config
    pixel_values = pixel_values.float()
    height, width = pixel_values.shape[-2:]
    h, w = height // config.patch_size, width // config.patch_size
    out = _base(ref).vision_model(
        pixel_values=pixel_values,
        interpolate_pos_encoding=(height, width) != (config.image_size, config.image_size),
        output_attentions=True,
        output_hidden_states=True,
    )
    batch, maps = box_ids.shape
    result = torch.zeros(batch, maps, len(layers), h, w)
    for li, layer in enumerate(layers):
        logits = class_logits(ref, out.hidden_states[layer + 1], queries.float())
        probs = out.attentions[layer]  # [B, heads, N, N]
        for b in range(batch):
            for m in range(maps):
                j, q = int(box_ids[b, m]), int(query_ids[b, m])
                if j < 0:
                    continue
                (grad,) = torch.autograd.grad(logits[b, j, q], probs, retain_graph=True)
                relevance = grad[b].clamp(min=0).mean(dim=0).mean(dim=0)[1:]  # heads, query rows; CLS key dropped
                result[b, m, li] = relevance.reshape(h, w)
    return result
