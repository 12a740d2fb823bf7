"""Independent LeGrad reference for DINOv2 with registers, BEiT and Data2VecVision classifiers (DESIGN.md section 2).

Obviously correct rather than fast, like `reference.py`: a float32 deep copy with eager attention (Data2VecVision
picks its attention class when built, so it is rebuilt from an eager config and given the weights), the full
vision graph with the attention probabilities the model multiplies V by, and one `torch.autograd.grad` per
(explained layer, target). The heads are written out here from the models' own code, not taken from the adapters.
"""

from __future__ import annotations

import copy

import torch
from transformers import (
    BeitForImageClassification,
    Data2VecVisionForImageClassification,
    Dinov2WithRegistersForImageClassification,
)

__all__ = ["eager_copy", "layer_logits", "reference_layer_maps"]

_FAMILIES = (
    Dinov2WithRegistersForImageClassification,
    BeitForImageClassification,
    Data2VecVisionForImageClassification,
)


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32, eval-mode copy of `model` whose every attention returns the probabilities it uses."""
    if isinstance(model, Data2VecVisionForImageClassification):
        config = copy.deepcopy(model.config)
        config._attn_implementation = "eager"
        ref = type(model)(config)
        ref.load_state_dict(model.state_dict())
    else:
        ref = copy.deepcopy(model)
        ref.set_attn_implementation("eager")
    ref = ref.float().eval()
    ref.requires_grad_(True)
    return ref


def _trunk(model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, Dinov2WithRegistersForImageClassification):
        return model.dinov2_with_registers
    if isinstance(model, BeitForImageClassification):
        return model.beit
    return model.data2vec_vision


def _num_prefix(model: torch.nn.Module) -> int:
    if isinstance(model, Dinov2WithRegistersForImageClassification):
        return 1 + model.config.num_register_tokens
    return 1


def layer_logits(model: torch.nn.Module, tokens: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Class logits [B, C] of block output tokens [B, N, D] through the model's own head.

    pooling "mean" (LeGrad): the pooled feature is the model's norm of the mean over ALL tokens; "model": the
    model's own pooling (its logits when given the last block's output).
    """
    trunk = _trunk(model)
    if isinstance(model, Dinov2WithRegistersForImageClassification):
        normalized = trunk.layernorm(tokens)
        first = trunk.layernorm(tokens.mean(dim=1)) if pooling == "mean" else normalized[:, 0]
        patches = normalized[:, 1 + model.config.num_register_tokens :].mean(dim=1)
        return model.classifier(torch.cat([first, patches], dim=-1))
    if model.config.use_mean_pooling:  # BEiT's layernorm is the identity then; the pooler's norm is the head's
        pooled = tokens.mean(dim=1) if pooling == "mean" else tokens[:, 1:].mean(dim=1)
        return model.classifier(trunk.pooler.layernorm(pooled))
    pooled = trunk.layernorm(tokens.mean(dim=1)) if pooling == "mean" else trunk.layernorm(tokens)[:, 0]
    return model.classifier(pooled)


def _forward(model: torch.nn.Module, pixel_values: torch.Tensor):
    kwargs = dict(output_attentions=True, output_hidden_states=True)
    if not isinstance(model, Dinov2WithRegistersForImageClassification):  # DINOv2 always interpolates
        size = model.config.image_size
        kwargs["interpolate_pos_encoding"] = tuple(pixel_values.shape[-2:]) != (size, size)
    return _trunk(model)(pixel_values, **kwargs)


def reference_layer_maps(
    model: torch.nn.Module, pixel_values: torch.Tensor, targets: torch.Tensor, layers: list[int], pooling: str = "mean"
) -> torch.Tensor:
    """Per-layer LeGrad maps, float32 [B, K, len(layers), h, w]; their sum over layers is `grid_maps`.

    Args:
        model: one of the three classifiers (left untouched: the reference runs on `eager_copy(model)`).
        pixel_values: [B, 3, H, W].
        targets: [B, K] class ids.
        layers: explained block indices.
        pooling: "mean" (score="legrad") or "model" (score="model").
    """
    if not isinstance(model, _FAMILIES):
        raise TypeError(f"no reference for {type(model).__name__}")
    ref = eager_copy(model)
    pixel_values = pixel_values.float()
    batch, _, height, width = pixel_values.shape
    patch = model.config.patch_size
    grid = (height // patch, width // patch)
    prefix = _num_prefix(ref)
    with torch.enable_grad():
        out = _forward(ref, pixel_values)
        assert len(out.attentions) == ref.config.num_hidden_layers, "the eager copy returned no probabilities"
        per_layer = []
        for layer in layers:
            scores = layer_logits(ref, out.hidden_states[layer + 1], pooling).gather(1, targets)
            per_target = []
            for k in range(targets.shape[1]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), out.attentions[layer], retain_graph=True)
                relevance = grad.clamp(min=0).mean(dim=(1, 2))[:, prefix:]  # heads, then queries; keys kept
                assert relevance.shape[1] == grid[0] * grid[1], (relevance.shape, grid)
                per_target.append(relevance.reshape(batch, *grid))
            per_layer.append(torch.stack(per_target, dim=1))
    return torch.stack(per_layer, dim=2).detach()
