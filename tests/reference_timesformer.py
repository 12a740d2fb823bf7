"""Independent LeGrad reference for TimeSformer's divided space-time attention (spatial and temporal).

Obviously correct rather than fast: a float32 eval copy of the model, the full graph, and one `torch.autograd.grad`
per (explained layer, target) w.r.t. the attention probabilities the model multiplies V by. The spatial attention's
probabilities are the ones the model returns (`output_attentions=True`, [batch * frames, heads, 1 + h*w, 1 + h*w]);
the temporal attention returns none, so each temporal attention of the copy runs the model's own attention code
written out here, keeping its probabilities [batch * h*w, heads, frames, frames]. The layouts are read from the
model's code: tokens after the CLS are [height, width, frame]; the spatial sequences are (video, frame), the
temporal ones (video, patch position) with positions row-major.
"""

from __future__ import annotations

import copy
import types

import torch

__all__ = ["reference_layer_maps"]


def _attention_keeping_probabilities(self, hidden_states, output_attentions: bool = False):
    """`TimesformerSelfAttention.forward` as the model writes it, keeping the probabilities on `self.probabilities`."""
    batch, tokens, width = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4)
    probabilities = ((query @ key.transpose(-2, -1)) * self.scale).softmax(dim=-1)
    self.probabilities = probabilities
    context = (probabilities @ value).transpose(1, 2).reshape(batch, tokens, width)
    return (context, probabilities) if output_attentions else (context,)


def layer_logits(model: torch.nn.Module, tokens: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Class logits [B, C] of block output tokens [B, 1 + h*w*T, D]: the final layernorm of the mean of ALL tokens
    ("mean", LeGrad), or of the CLS token ("model", the model's own pooling), then the classifier."""
    norm = model.timesformer.layernorm
    return model.classifier(norm(tokens.mean(dim=1)) if pooling == "mean" else norm(tokens)[:, 0])


def reference_layer_maps(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    targets: torch.Tensor,
    layers: list[int],
    pooling: str = "mean",
    attention: str = "spatial",
) -> torch.Tensor:
    """Per-layer LeGrad maps, float32 [B, K, len(layers), frames, h, w]; their sum over layers is `grid_maps`.

    Args:
        model: a TimesformerForVideoClassification (left untouched).
        pixel_values: [B, frames, 3, H, W].
        targets: [B, K] class ids.
        layers: explained block indices.
        pooling: "mean" (score="legrad") or "model" (score="model").
        attention: "spatial" or "temporal", the attention of each block differentiated.
    """
    ref = copy.deepcopy(model).float().eval()
    ref.requires_grad_(True)
    for block in ref.timesformer.encoder.layer:
        for module in (block.attention.attention, block.temporal_attention.attention):
            module.forward = types.MethodType(_attention_keeping_probabilities, module)
    pixel_values = pixel_values.float()
    batch, frames, _, height, width = pixel_values.shape
    h, w = height // ref.config.patch_size, width // ref.config.patch_size
    with torch.enable_grad():
        out = ref.timesformer(pixel_values, output_attentions=True, output_hidden_states=True)
        blocks = ref.timesformer.encoder.layer
        per_layer = []
        for layer in layers:
            spatial = blocks[layer].attention.attention.probabilities
            assert spatial is out.attentions[layer]  # the probabilities the model itself returns
            probabilities = (
                spatial if attention == "spatial" else blocks[layer].temporal_attention.attention.probabilities
            )
            scores = layer_logits(ref, out.hidden_states[layer + 1], pooling).gather(1, targets)
            per_target = []
            for k in range(targets.shape[1]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), probabilities, retain_graph=True)
                relevance = grad.clamp(min=0).mean(dim=(1, 2))  # heads, then query rows; keys kept
                if attention == "spatial":  # [B * frames, 1 + h*w]: drop each frame's CLS copy
                    grid = relevance[:, 1:].reshape(batch, frames, h, w)
                else:  # [B * h*w, frames], positions row-major
                    grid = relevance.reshape(batch, h, w, frames).permute(0, 3, 1, 2)
                per_target.append(grid)
            per_layer.append(torch.stack(per_target, dim=1))
    return torch.stack(per_layer, dim=2).detach()
