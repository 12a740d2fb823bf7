"""Independent LeGrad reference for the video classifiers VideoMAE and ViViT (DESIGN.md sections 2 and 7).

Obviously correct rather than fast: a float32 copy built from an eager config (VideoMAE picks its attention when it
is built) and given the weights, the full graph with the attention probabilities the model multiplies V by, and
one `torch.autograd.grad` per (explained layer, target). The heads are written out here from the models' own code,
not taken from the adapters; the tubelet tokens are laid out [time, height, width], as the models' Conv3d flattens
them.
"""

from __future__ import annotations

import copy

import torch
from transformers import VideoMAEForVideoClassification, VivitForVideoClassification

__all__ = ["eager_copy", "reference_layer_maps", "tubelet_grid"]


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32, eval-mode copy of `model` whose attention returns the probabilities it uses."""
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    ref = type(model)(config)
    ref.load_state_dict(model.state_dict())
    ref = ref.float().eval()
    ref.requires_grad_(True)
    return ref


def tubelet_grid(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[int, int, int]:
    """(frames / tubelet, H / patch, W / patch) of [B, frames, C, H, W] videos."""
    _, frames, _, height, width = pixel_values.shape
    config = model.config
    if isinstance(model, VivitForVideoClassification):
        t, ph, pw = config.tubelet_size
    else:
        t, ph, pw = config.tubelet_size, config.patch_size, config.patch_size
    return frames // t, height // ph, width // pw


def layer_logits(model: torch.nn.Module, tokens: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Class logits [B, C] of block output tokens [B, N, D] through the model's own head.

    pooling "mean" (LeGrad): the head's norm on the mean over ALL tokens; "model": the model's own pooling.
    """
    if isinstance(model, VivitForVideoClassification):
        norm = model.vivit.layernorm
        return model.classifier(norm(tokens.mean(dim=1)) if pooling == "mean" else norm(tokens)[:, 0])
    if model.config.use_mean_pooling:  # the model's own head: fc_norm of the mean of all tokens
        return model.classifier(model.fc_norm(tokens.mean(dim=1)))
    norm = model.videomae.layernorm
    return model.classifier(norm(tokens.mean(dim=1)) if pooling == "mean" else norm(tokens)[:, 0])


def reference_layer_maps(
    model: torch.nn.Module, pixel_values: torch.Tensor, targets: torch.Tensor, layers: list[int], pooling: str = "mean"
) -> torch.Tensor:
    """Per-layer LeGrad maps, float32 [B, K, len(layers), t, h, w]; their sum over layers is `grid_maps`.

    Args:
        model: VideoMAEForVideoClassification or VivitForVideoClassification (left untouched).
        pixel_values: [B, frames, 3, H, W].
        targets: [B, K] class ids.
        layers: explained block indices.
        pooling: "mean" (score="legrad") or "model" (score="model").
    """
    if not isinstance(model, (VideoMAEForVideoClassification, VivitForVideoClassification)):
        raise TypeError(f"no reference for {type(model).__name__}")
    ref = eager_copy(model)
    pixel_values = pixel_values.float()
    batch = pixel_values.shape[0]
    grid = tubelet_grid(ref, pixel_values)
    prefix = 1 if isinstance(ref, VivitForVideoClassification) else 0
    trunk = ref.vivit if prefix else ref.videomae
    with torch.enable_grad():
        out = trunk(pixel_values, output_attentions=True, output_hidden_states=True)
        assert len(out.attentions) == ref.config.num_hidden_layers, "the eager copy returned no probabilities"
        assert len(out.hidden_states) == ref.config.num_hidden_layers + 1
        per_layer = []
        for layer in layers:
            scores = layer_logits(ref, out.hidden_states[layer + 1], pooling).gather(1, targets)
            per_target = []
            for k in range(targets.shape[1]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), out.attentions[layer], retain_graph=True)
                relevance = grad.clamp(min=0).mean(dim=(1, 2))[:, prefix:]  # heads, then queries; keys kept
                assert relevance.shape[1] == grid[0] * grid[1] * grid[2], (relevance.shape, grid)
                per_target.append(relevance.reshape(batch, *grid))
            per_layer.append(torch.stack(per_target, dim=1))
    return torch.stack(per_layer, dim=2).detach()
