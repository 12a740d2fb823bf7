"""Slow, independent LeGrad reference for BLIP image-text retrieval (`BlipForImageTextRetrieval`).

Written to be obviously correct rather than fast, as `reference.py`: it deep-copies the model in float32, runs the
whole vision tower by hand with gradients on (each block's attention from its fused `qkv` split as [3, heads,
head_dim], the softmax probabilities kept), and takes one `torch.autograd.grad` per (explained layer, prompt) with
respect to that layer's probabilities. It knows nothing of the package.

Scores of block l's output tokens Z (`readout`):
- "itm": the matching head's "match" logit (index 1), the text encoder cross-attending `post_layernorm(Z)`.
- "itc": `<t_k, normalize(vision_proj(post_layernorm(mean Z)))>` with the normalized text embeddings t_k given.
- "itc-cls": the same with the CLS token instead of the mean.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

__all__ = ["reference_grid_maps", "vision_states"]

MATCH = 1


def vision_states(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(block outputs [batch, tokens, hidden] per block, attention probabilities [batch, heads, tokens, tokens] per
    block), computed by hand from the vision tower's modules in the current grad mode."""
    vision = model.vision_model
    config = vision.config
    height, width = pixel_values.shape[-2:]
    interpolate = (height, width) != (config.image_size, config.image_size)
    hidden = vision.embeddings(pixel_values, interpolate_pos_encoding=interpolate)
    batch, tokens, dim = hidden.shape
    heads = config.num_attention_heads
    head_dim = dim // heads
    outputs, probabilities = [], []
    for block in vision.encoder.layers:
        attention = block.self_attn
        qkv = attention.qkv(block.layer_norm1(hidden)).reshape(batch, tokens, 3, heads, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each [batch, heads, tokens, head_dim]
        probs = torch.softmax(query @ key.transpose(-1, -2) * head_dim**-0.5, dim=-1)
        context = (probs @ value).permute(0, 2, 1, 3).reshape(batch, tokens, dim)
        hidden = hidden + attention.projection(context)
        hidden = hidden + block.mlp(block.layer_norm2(hidden))
        outputs.append(hidden)
        probabilities.append(probs)
    return outputs, probabilities


def _scores(ref, tokens: torch.Tensor, readout: str, text_embeds, input_ids, attention_mask) -> torch.Tensor:
    """[batch, prompts]: each prompt's score from one block's output tokens."""
    post_layernorm = ref.vision_model.post_layernorm
    if readout == "itm":
        image = post_layernorm(tokens)
        batch = image.shape[0]
        columns = []
        for k in range(input_ids.shape[0]):
            mask = None if attention_mask is None else attention_mask[k : k + 1].expand(batch, -1)
            text = ref.text_encoder(
                input_ids=input_ids[k : k + 1].expand(batch, -1),
                attention_mask=mask,
                encoder_hidden_states=image,
                encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long),
            ).last_hidden_state
            columns.append(ref.itm_head(text[:, 0])[:, MATCH])
        return torch.stack(columns, dim=1)
    pooled = tokens[:, 0] if readout == "itc-cls" else tokens.mean(dim=1)
    feature = F.normalize(ref.vision_proj(post_layernorm(pooled)), dim=-1)
    return feature @ F.normalize(text_embeds.float(), dim=-1).T


def reference_grid_maps(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    layers: list[int],
    *,
    readout: str = "itm",
    text_embeds: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """LeGrad grid maps, float32 [batch, prompts, h, w]: raw sums over `layers` of the mean over heads and queries
    of ReLU(dS^l/dA^l), the CLS key dropped.

    Args:
        model: a `BlipForImageTextRetrieval`.
        pixel_values: [batch, 3, height, width]; a size other than the config's interpolates the positions.
        layers: distinct block indices.
        readout: "itm", "itc" or "itc-cls" (module docstring).
        text_embeds: "itc"/"itc-cls": [prompts, dim] text embeddings (normalized here).
        input_ids, attention_mask: "itm": the tokenized prompts [prompts, tokens].
    """
    ref = copy.deepcopy(model).float().eval()
    ref.requires_grad_(True)
    config = ref.vision_model.config
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < config.num_hidden_layers for i in layers):
        raise ValueError(f"layers must be distinct indices in [0, {config.num_hidden_layers}), got {layers}")
    grid = (pixel_values.shape[-2] // config.patch_size, pixel_values.shape[-1] // config.patch_size)
    with torch.enable_grad():
        outputs, probabilities = vision_states(ref, pixel_values.float())
        total = 0.0
        for layer in layers:
            scores = _scores(ref, outputs[layer], readout, text_embeds, input_ids, attention_mask)
            per_prompt = []
            for k in range(scores.shape[1]):
                # Images are independent, so the gradient of the batch sum is each image's own gradient.
                (grad,) = torch.autograd.grad(scores[:, k].sum(), probabilities[layer], retain_graph=True)
                per_prompt.append(grad.clamp(min=0).mean(dim=(1, 2))[:, 1:])
            total = total + torch.stack(per_prompt, dim=1)
    return total.reshape(*total.shape[:2], *grid).detach()
