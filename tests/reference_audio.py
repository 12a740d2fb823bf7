"""Independent LeGrad reference for `ASTForAudioClassification` (DESIGN.md sections 2 and 7).

Obviously correct rather than fast, like `reference.py`: a float32 model rebuilt from an eager-attention config
with the weights loaded (so its attention returns the probabilities it multiplies V by, whatever
`set_attn_implementation` does), the full graph of the whole model, and one `torch.autograd.grad` per (explained
layer, target). The head is written out here from AST's own code, not taken from the adapter, and the patch grid
is read off the patch convolution's output.
"""

from __future__ import annotations

import copy

import torch
from transformers import ASTForAudioClassification

__all__ = ["eager_copy", "layer_logits", "reference_layer_maps"]


def eager_copy(model: ASTForAudioClassification) -> ASTForAudioClassification:
    """A float32, eval-mode copy of `model` built with eager attention."""
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    ref = ASTForAudioClassification(config)
    ref.load_state_dict({name: value.float() for name, value in model.state_dict().items()})
    ref = ref.float().eval()
    ref.requires_grad_(True)
    return ref


def layer_logits(model: ASTForAudioClassification, tokens: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Class logits [B, C] of block output tokens [B, N, D]: "mean" (LeGrad) pools `layernorm(mean of all tokens)`;
    "model" pools as AST does, `(layernorm(tokens)[:, 0] + layernorm(tokens)[:, 1]) / 2`."""
    trunk = model.audio_spectrogram_transformer
    if pooling == "mean":
        pooled = trunk.layernorm(tokens.mean(dim=1))
    else:
        normalized = trunk.layernorm(tokens)
        pooled = (normalized[:, 0] + normalized[:, 1]) / 2
    return model.classifier.dense(model.classifier.layernorm(pooled))


def reference_layer_maps(
    model: ASTForAudioClassification,
    input_values: torch.Tensor,
    targets: torch.Tensor,
    layers: list[int],
    pooling: str = "mean",
) -> torch.Tensor:
    """Per-layer LeGrad maps, float32 [B, K, len(layers), frequency patches, time patches].

    Args:
        model: left untouched (the reference runs on `eager_copy(model)`).
        input_values: [B, time frames, mel bins].
        targets: [B, K] class ids.
        layers: explained block indices.
        pooling: "mean" (score="legrad") or "model" (score="model").
    """
    ref = eager_copy(model)
    input_values = input_values.float()
    batch = input_values.shape[0]
    projection = ref.audio_spectrogram_transformer.embeddings.patch_embeddings.projection
    with torch.no_grad():  # the conv's output is [B, hidden, frequency, time]: its grid, frequency-major
        grid = tuple(projection(input_values.unsqueeze(1).transpose(2, 3)).shape[-2:])
    with torch.enable_grad():
        out = ref.audio_spectrogram_transformer(input_values, output_attentions=True, output_hidden_states=True)
        assert len(out.attentions) == ref.config.num_hidden_layers, "the eager copy returned no probabilities"
        last = ref.audio_spectrogram_transformer.layernorm(out.hidden_states[-1])
        torch.testing.assert_close(last, out.last_hidden_state)  # hidden_states[l + 1] is block l's output
        per_layer = []
        for layer in layers:
            scores = layer_logits(ref, out.hidden_states[layer + 1], pooling).gather(1, targets)
            per_target = []
            for k in range(targets.shape[1]):
                (grad,) = torch.autograd.grad(scores[:, k].sum(), out.attentions[layer], retain_graph=True)
                relevance = grad.clamp(min=0).mean(dim=(1, 2))[:, 2:]  # heads, then queries; CLS, distillation out
                assert relevance.shape[1] == grid[0] * grid[1], (relevance.shape, grid)
                per_target.append(relevance.reshape(batch, *grid))
            per_layer.append(torch.stack(per_target, dim=1))
    return torch.stack(per_layer, dim=2).detach()
