"""Baseline explainers on the same Hugging Face models as LeGrad, for the localization benchmark.

Each baseline has LeGrad's verb and output: `explain(images=..., text=... | targets=...)` (or `pixel_values=`,
`text_embeds=`) returns a `LeGradOutput` whose `grid_maps` [batch, prompts, h, w] hold the method's relevance of
each patch and whose `heatmaps` are those maps upsampled and min-max normalized by `maps.heatmaps_from_grids`,
exactly as LeGrad's. Inputs go through the same validation, processor and text encoding as `LeGradExplainer`, so
the benchmark can treat every method alike.

The methods (A^l: block l's attention probabilities [heads, tokens, tokens], mean_h: mean over heads):

- `RawAttentionExplainer`: the last block's attention, mean over heads, read at the CLS row (CLIP, ViT-family); for
  SigLIP, which has no CLS token, the attention-pooling head's probe attention over the last block's tokens.
- `RolloutExplainer` (Abnar & Zuidema 2020): R = prod over blocks of (0.5 mean_h A^l + 0.5 I), last block on the
  left, read at the CLS row; for SigLIP the head's mean attention row times R.
- `GradCAMExplainer` (Selvaraju et al. 2017, on tokens as in pytorch-grad-cam's ViT recipe): X = the tokens
  entering the last block's attention (its first LayerNorm's output), G = dS/dX; weights w = mean of G over the
  patch tokens; map = ReLU(X w) per patch token.
- `CheferExplainer` (Chefer et al. 2021, "Generic Attention-model Explainability"): R = I, then for every block in
  order R += mean_h(ReLU(dS/dA^l * A^l)) @ R; read at the CLS row; for SigLIP, the head is the last attention:
  mean_h(ReLU(dS/dA_head * A_head)) @ R.
- LeGrad itself, and LeGrad with `score="model"`: `make_explainer("legrad" | "legrad_model_score", ...)`.

S is the model's own score for a prompt or class: the cosine between the image and text embeddings (CLIP, SigLIP:
monotone in `logits_per_image`) or the class logit. Raw attention and rollout do not depend on S: every prompt of
an image gets the same map.

The baselines run on a float32 deep copy of the model with eager attention (so the probabilities are returned and
can be differentiated); clarity over speed. The user's model is never touched: not its weights, attention
implementation, `requires_grad` flags, train/eval mode or hooks.

Example:
    >>> from transformers_legrad.evaluation.baselines import make_explainer
    >>> rollout = make_explainer("rollout", model, processor)
    >>> out = rollout.explain(images=image, text=["a red circle"])
    >>> out.grid_maps.shape, out.heatmaps.shape   # [1, 1, h, w], [1, 1, H, W]
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import maps
from ..adapters import PixelInputs, siglip
from ..engine import eval_mode
from ..explainer import LeGradExplainer, LeGradOutput

__all__ = [
    "BASELINES",
    "METHODS",
    "BaselineExplainer",
    "CheferExplainer",
    "GradCAMExplainer",
    "RawAttentionExplainer",
    "RolloutExplainer",
    "attention_rollout",
    "chefer_relevance",
    "eager_copy",
    "gradcam_relevance",
    "make_explainer",
    "pooling_head_by_hand",
]

#: Every method the benchmark knows, LeGrad's two variants first.
METHODS: tuple[str, ...] = ("legrad", "legrad_model_score", "rollout", "raw_attention", "gradcam", "chefer")


# --- the maths, on plain tensors ---------------------------------------------------------------------------------
def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

    Args:
        attentions: per block, in forward order, probabilities [batch, heads, tokens, tokens].

    Returns:
        float32 [batch, tokens, tokens]: (0.5 Ā^L + 0.5 I) @ ... @ (0.5 Ā^1 + 0.5 I) with Ā = mean over heads. Each
        factor's rows sum to 1 (softmax rows plus the identity for the residual), so every row of the product does.
    """
    rollout = None
    for attention in attentions:
        mixed = attention.float().mean(dim=1)
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        step = 0.5 * mixed + 0.5 * eye
        rollout = step if rollout is None else step @ rollout
    if rollout is None:
        raise ValueError("attention rollout needs at least one block's attention.")
    return rollout


def chefer_relevance(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. 2021 ("Generic Attention-model Explainability"), self-attention rule.

    Args:
        attentions: per block, in forward order, probabilities [batch, heads, tokens, tokens].
        gradients: dS/dA for each of them, same shapes.

    Returns:
        float32 [batch, tokens, tokens]: R = I, then for each block R = R + mean_h(ReLU(dS/dA * A)) @ R.
    """
    relevance = None
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient.float() * attention.float()).clamp(min=0).mean(dim=1)
        if relevance is None:
            relevance = torch.eye(weighted.shape[-1], dtype=weighted.dtype, device=weighted.device).expand_as(weighted)
        relevance = relevance + weighted @ relevance
    if relevance is None:
        raise ValueError("Chefer et al.'s relevance needs at least one block's attention.")
    return relevance


def gradcam_relevance(tokens: torch.Tensor, gradients: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """GradCAM on transformer tokens: ReLU(sum_d w_d X_nd) with w_d = mean over patch tokens of dS/dX_nd.

    Args:
        tokens: activations X [batch, tokens, channels].
        gradients: dS/dX, same shape.
        num_prefix_tokens: tokens before the patches (CLS, ...): left out of the weights, and 0 in the result.

    Returns:
        float32 [batch, tokens], zero at the prefix tokens.
    """
    patches = tokens[:, num_prefix_tokens:].float()
    weights = gradients[:, num_prefix_tokens:].float().mean(dim=1)
    cam = torch.einsum("bnd,bd->bn", patches, weights).clamp(min=0)
    return F.pad(cam, (num_prefix_tokens, 0))


def pooling_head_by_hand(
    head: nn.Module, tokens: torch.Tensor, valid_tokens: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SigLIP's attention-pooling head, recomputed so its probabilities are part of the autograd graph.

    `nn.MultiheadAttention` returns weights that are not in the graph; this is the same computation written out:
    one learned probe query attends over the tokens, then out_proj, and a residual MLP.

    Args:
        head: `vision_model.head` of a SigLIP / SigLIP 2 model.
        tokens: the tokens the head reads [batch, tokens, hidden] (after `post_layernorm`, as the model calls it).
        valid_tokens: bool [batch, tokens] of real patches (SigLIP 2 padding), or None.

    Returns:
        (pooled [batch, hidden], equal to the model's `pooler_output`; probabilities [batch, heads, 1, tokens]).
    """
    probabilities, values = siglip.pooling_head_probabilities(head, tokens, valid_tokens)
    return siglip.pooling_head_output(head, siglip.pooling_head_context(probabilities, values)), probabilities


def eager_copy(model: nn.Module) -> nn.Module:
    """A float32, eval-mode, frozen deep copy of `model` with eager attention; `model` itself is not changed."""
    duplicate = copy.deepcopy(model)
    duplicate.set_attn_implementation("eager")
    return duplicate.float().eval().requires_grad_(False)


# --- the explainers ----------------------------------------------------------------------------------------------
class _Recording:
    """What one forward of the eager copy leaves behind (tensors in the autograd graph when gradients are on)."""

    def __init__(self) -> None:
        self.attentions: list[torch.Tensor] = []
        self.last_block_tokens: torch.Tensor | None = None
        self.head_attention: torch.Tensor | None = None
        self.features: torch.Tensor | None = None


def _check_baselines_support(adapter) -> None:
    """The baselines read eager attention probabilities of image models, and SigLIP's pooling head by hand."""
    head = getattr(adapter, "head", None)
    siglip_head = not adapter.explains_pooling_head or isinstance(
        getattr(head, "attention", None), nn.MultiheadAttention
    )
    if adapter.spec.modality != "image" or not siglip_head:
        raise TypeError(
            f"the evaluation baselines compare methods on image models with a CLS token or SigLIP's pooling head; "
            f"{type(adapter.model).__name__} ({adapter.spec.display_name}) is explained by LeGrad only "
            "(`LeGradExplainer`)."
        )


class BaselineExplainer:
    """Base class: LeGrad's inputs and outputs around a method that maps (recording, scores) to token relevance.

    Args:
        model: a model `LeGradExplainer` supports (CLIP, SigLIP / SigLIP 2, ViT-family classifiers). It is left
            exactly as found; the method runs on `eager_copy(model)`.
        processor: the model's processor, for raw images and text.
        eager_model: an `eager_copy(model)` to share between several baselines of one model (saves memory).
    """

    method: ClassVar[str] = ""
    #: Whether the method differentiates the score (GradCAM, Chefer) or only reads attention (raw, rollout).
    uses_gradients: ClassVar[bool] = False
    #: Whether the map comes from every block (rollout, Chefer) or from the last one only (raw attention, GradCAM).
    uses_all_blocks: ClassVar[bool] = False

    def __init__(self, model: nn.Module, processor=None, *, eager_model: nn.Module | None = None) -> None:
        _check_baselines_support(LeGradExplainer(model).adapter)  # LeGrad's "is this model supported" check first
        self.model = model
        self.processor = processor
        self.eager_model = eager_copy(model) if eager_model is None else eager_model
        # Input validation, the processor and the text tower are LeGrad's own (`prepare_request`), on the copy.
        self._inputs = LeGradExplainer(self.eager_model, processor)
        self.adapter = self._inputs.adapter

    def explain(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        targets=None,
        top_k: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> LeGradOutput:
        """The method's maps, with LeGrad's arguments (see `LeGradExplainer.explain`) and output.

        Returns:
            LeGradOutput: `grid_maps` [batch, prompts, h, w] (the method's patch relevance, >= 0), `heatmaps`
            [batch, prompts, height, width] in [0, 1], `scores` (the model's own), `labels`; no `layer_maps`.
        """
        adapter = self.adapter
        request = self._inputs.prepare_request(
            images,
            text,
            pixel_values=pixel_values,
            text_embeds=text_embeds,
            targets=targets,
            top_k=top_k,
            image_size=image_size,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
        )
        pixels = request.pixels

        with eval_mode(self.eager_model), torch.set_grad_enabled(self.uses_gradients):
            recording = self._forward(pixels)
            features = recording.features
            batch_directions, labels, target_ids = request.directions_for(features)
            differentiable_scores = torch.einsum("bf,bkf->bk", features, batch_directions)
            relevance = self._relevance(recording, differentiable_scores).detach()
        features = features.detach()
        scores = adapter.final_scores(features, batch_directions)
        probabilities = adapter.probabilities(features, batch_directions, scores)

        grid_maps = maps.tokens_to_grids(relevance.unsqueeze(2), adapter.num_prefix_tokens, pixels.grid_shapes)
        grid_maps = grid_maps[:, :, 0].cpu()
        heatmaps = maps.heatmaps_from_grids(grid_maps, pixels.grid_shapes, pixels.image_sizes, pixels.patch_geometry)
        return LeGradOutput(
            heatmaps=heatmaps,
            grid_maps=grid_maps.float(),
            layer_maps=None,
            labels=labels,
            scores=scores.float().cpu(),
            probabilities=probabilities.float().cpu(),
            explained_layers=list(range(len(adapter.blocks)))[0 if self.uses_all_blocks else -1 :],
            grid_shapes=list(pixels.grid_shapes),
            image_sizes=list(pixels.image_sizes),
            target_ids=target_ids,
            modality=adapter.spec.modality,
        )

    __call__ = explain

    @property
    def _name(self) -> str:
        return type(self.model).__name__

    @property
    def _reads_pooling_head(self) -> bool:
        return self.adapter.explains_pooling_head

    # --- one recorded forward ----------------------------------------------------------------------------------
    def _forward(self, pixels: PixelInputs) -> _Recording:
        recording = _Recording()
        handles = []
        blocks = self.adapter.blocks
        for index, block in enumerate(blocks):
            attention = self.adapter.attention_module(block)
            handles.append(attention.register_forward_hook(lambda m, a, out: recording.attentions.append(out[1])))
            if index == len(blocks) - 1:

                def keep_tokens(module, args, kwargs):
                    recording.last_block_tokens = args[0] if args else kwargs["hidden_states"]

                handles.append(attention.register_forward_pre_hook(keep_tokens, with_kwargs=True))
        if self._reads_pooling_head:

            def head_by_hand(module, args, output):
                pooled, recording.head_attention = pooling_head_by_hand(module, args[0], pixels.valid_tokens)
                return pooled

            handles.append(self.adapter.head.register_forward_hook(head_by_hand))
        model_kwargs = dict(pixels.model_kwargs)
        if self.uses_gradients:  # the copy's weights are frozen: the graph hangs from the input
            model_kwargs["pixel_values"] = model_kwargs["pixel_values"].detach().clone().requires_grad_(True)
        try:
            recording.features = self.adapter.image_features(
                PixelInputs(model_kwargs, pixels.grid_shapes, pixels.image_sizes, pixels.valid_tokens)
            )
        finally:
            for handle in handles:
                handle.remove()
        if len(recording.attentions) != len(blocks) or any(a is None for a in recording.attentions):
            raise RuntimeError(f"{self.method}: the eager copy of {self._name} did not return attention probabilities.")
        return recording

    def _relevance(self, recording: _Recording, scores: torch.Tensor) -> torch.Tensor:
        """Token relevance [batch, prompts, tokens] (prefix positions are ignored) from one recorded forward."""
        raise NotImplementedError

    def _read_row(self, relation: torch.Tensor, head_rows: torch.Tensor | None) -> torch.Tensor:
        """[batch, tokens]: the CLS row of a token-to-token relation, or for SigLIP the head's row(s) @ relation."""
        if self._reads_pooling_head:
            return (head_rows @ relation)[:, 0]
        return relation[:, 0]

    def _per_prompt(self, scores: torch.Tensor, inputs: list[torch.Tensor]):
        """dS_k/d(inputs) for each prompt k: one backward per prompt through the shared graph."""
        prompts = scores.shape[1]
        for k in range(prompts):
            yield torch.autograd.grad(scores[:, k].sum(), inputs, retain_graph=k < prompts - 1)


class RawAttentionExplainer(BaselineExplainer):
    """The last block's attention probabilities, mean over heads, CLS row (SigLIP: the pooling head's probe row).

    Example:
        >>> RawAttentionExplainer(model, processor).explain(images=image, text=["a cat"]).heatmaps
    """

    method = "raw_attention"

    def _relevance(self, recording: _Recording, scores: torch.Tensor) -> torch.Tensor:
        if self._reads_pooling_head:
            row = recording.head_attention.float().mean(dim=1)[:, 0]
        else:
            row = recording.attentions[-1].float().mean(dim=1)[:, 0]
        return row.unsqueeze(1).expand(-1, scores.shape[1], -1)


class RolloutExplainer(BaselineExplainer):
    """Attention rollout with the 0.5 A + 0.5 I residual, mean over heads, read at the CLS row (see module doc).

    Example:
        >>> RolloutExplainer(model, processor).explain(images=image, text=["a cat"]).heatmaps
    """

    method = "rollout"
    uses_all_blocks = True

    def _relevance(self, recording: _Recording, scores: torch.Tensor) -> torch.Tensor:
        rollout = attention_rollout(recording.attentions)
        head_rows = recording.head_attention.float().mean(dim=1) if self._reads_pooling_head else None
        return self._read_row(rollout, head_rows).unsqueeze(1).expand(-1, scores.shape[1], -1)


class GradCAMExplainer(BaselineExplainer):
    """GradCAM on the tokens entering the last block's attention (its first LayerNorm's output).

    The last block's OUTPUT tokens would be the literal "last layer", but CLIP and ViT read only the CLS token of
    that output, so the gradient there is exactly zero on every patch; one step earlier, the last attention still
    mixes patches into CLS. This is the `target_layers=[blocks[-1].norm1]` recipe of pytorch-grad-cam for ViTs,
    used for every family alike.

    Example:
        >>> GradCAMExplainer(model, processor).explain(images=image, text=["a cat"]).heatmaps
    """

    method = "gradcam"
    uses_gradients = True

    def _relevance(self, recording: _Recording, scores: torch.Tensor) -> torch.Tensor:
        tokens = recording.last_block_tokens
        prefix = self.adapter.num_prefix_tokens
        per_prompt = [gradcam_relevance(tokens, grads[0], prefix) for grads in self._per_prompt(scores, [tokens])]
        return torch.stack(per_prompt, dim=1)


class CheferExplainer(BaselineExplainer):
    """Chefer et al. 2021's gradient-weighted relevance propagation over every block (see module doc).

    Example:
        >>> CheferExplainer(model, processor).explain(images=image, text=["a cat"]).heatmaps
    """

    method = "chefer"
    uses_gradients = True
    uses_all_blocks = True

    def _relevance(self, recording: _Recording, scores: torch.Tensor) -> torch.Tensor:
        attentions = recording.attentions
        head = recording.head_attention if self._reads_pooling_head else None
        inputs = attentions + ([head] if head is not None else [])
        per_prompt = []
        for grads in self._per_prompt(scores, inputs):
            relevance = chefer_relevance(attentions, grads[: len(attentions)])
            head_rows = None
            if head is not None:
                head_rows = (grads[-1].float() * head.float()).clamp(min=0).mean(dim=1)
            per_prompt.append(self._read_row(relevance, head_rows))
        return torch.stack(per_prompt, dim=1)


BASELINES: dict[str, type[BaselineExplainer]] = {
    cls.method: cls for cls in (RawAttentionExplainer, RolloutExplainer, GradCAMExplainer, CheferExplainer)
}


def make_explainer(method: str, model: nn.Module, processor=None, *, eager_model: nn.Module | None = None):
    """An explainer for one of `METHODS`, all with `explain(...) -> LeGradOutput`.

    Args:
        method: "legrad" (`LeGradExplainer` defaults), "legrad_model_score" (`score="model"`), "rollout",
            "raw_attention", "gradcam" or "chefer".
        model, processor: the model to explain and its processor.
        eager_model: for the baselines, an `eager_copy(model)` shared between them.
    """
    if method == "legrad":
        return LeGradExplainer(model, processor)
    if method == "legrad_model_score":
        return LeGradExplainer(model, processor, score="model")
    if method not in BASELINES:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}.")
    return BASELINES[method](model, processor, eager_model=eager_model)
