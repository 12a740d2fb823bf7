"""Slow, independent LeGrad reference for dual encoders with CLIP's vision layout (MetaCLIP 2, AltCLIP, Chinese CLIP).

Written to be obviously correct rather than fast, as `reference.py`: it deep-copies the model, switches the copy to
eager attention, runs the full vision graph once with gradients on, and takes one `torch.autograd.grad` per
(explained layer, prompt) with respect to that layer's attention probabilities. It knows nothing of the package.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

__all__ = ["reference_grid_maps"]


def reference_grid_maps(
    model: torch.nn.Module, pixel_values: torch.Tensor, text_embeds: torch.Tensor, layers: list[int]
) -> torch.Tensor:
    """LeGrad grid maps, float32 [batch, prompts, h, w]: raw sums over `layers` of the mean over heads and queries
    of ReLU(dS^l/dA^l), the CLS key dropped, with S^l = <normalize(visual_projection(post_layernorm(mean Z^l))), t>.

    Args:
        model: a model with `vision_model` (CLIP's vision tower) and `visual_projection`.
        pixel_values: [batch, 3, height, width]; a size other than the config's goes through
            `interpolate_pos_encoding`.
        text_embeds: [prompts, dim] prompt directions (normalized here).
        layers: distinct block indices in [0, number of blocks).
    """
    ref = copy.deepcopy(model).float().eval()
    ref.set_attn_implementation("eager")
    ref.requires_grad_(True)  # the attentions must be in the graph even if the caller froze the model
    config = ref.vision_model.config
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < config.num_hidden_layers for i in layers):
        raise ValueError(f"layers must be distinct indices in [0, {config.num_hidden_layers}), got {layers}")
    pixel_values = pixel_values.float()
    height, width = pixel_values.shape[-2:]
    grid = (height // config.patch_size, width // config.patch_size)
    embeds = F.normalize(text_embeds.detach().float(), dim=-1)
    with torch.enable_grad():
        out = ref.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=(height, width) != (config.image_size, config.image_size),
            output_attentions=True,
            output_hidden_states=True,
        )
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        assert len(out.attentions) == config.num_hidden_layers and all(a is not None for a in out.attentions)
        total = 0.0
        for layer in layers:
            tokens = out.hidden_states[layer + 1]  # block `layer`'s output
            pooled = ref.vision_model.post_layernorm(tokens.mean(dim=1))
            scores = F.normalize(ref.visual_projection(pooled), dim=-1) @ embeds.T
            per_prompt = []
            for k in range(scores.shape[1]):
                # Images are independent, so the gradient of the batch sum is each image's own gradient.
                (grad,) = torch.autograd.grad(scores[:, k].sum(), out.attentions[layer], retain_graph=True)
                per_prompt.append(grad.clamp(min=0).mean(dim=1).mean(dim=1)[:, 1:])
            total = total + torch.stack(per_prompt, dim=1)
    return total.reshape(*total.shape[:2], *grid).detach()
