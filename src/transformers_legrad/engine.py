"""The LeGrad engine: one trunk forward, then a small local graph per explained block.

LeGrad's layer-l score depends on block l's attention probabilities A^l only through block l's own tail
(context A@V -> output projection -> residual -> MLP -> readout), so the engine never builds the full graph:

1. The trunk runs once per image batch under `torch.no_grad()` with the model's own attention implementation
   (SDPA, flash, ...). Hooks take V (the value projection's output) of each explained block and replace its
   attention context O = A@V (the output projection's input) by a leaf that requires grad; gradients are switched
   on from there to the end of the block, so the block's tail (output projection -> residual -> MLP) is recorded
   as a small local graph during the trunk forward itself and nothing is computed twice. The block's output goes
   on detached, so the rest of the trunk builds no graph. Per head, dS/dA_h = dS/dO_h @ V_h^T exactly, because A
   enters the graph only through A@V; so the probabilities never need to be materialized, under any kernel.
   The recorded tails are bounded by a memory budget; blocks beyond it keep only their inputs and are recomputed
   locally, one at a time, in step 2. (When a pooling head is explained, its input tokens are kept instead.)
2. The prompts are differentiated in batched backwards (`is_grads_batched`) of each block's local graph, a
   bounded chunk of prompts at a time, reduced at once (ReLU, mean over heads and query rows) in bounded chunks,
   and the graph is freed before the next block's backward. A readout that reads the prompts itself
   (`adapter.reads_prompts`, BLIP's matching head) is built once per chunk of prompts on the block's shared tail
   (`adapter.prompt_chunk`), so the work and memory per prompt do not grow with the number of prompts.

The engine knows nothing about model families: everything family-specific goes through a `FamilyAdapter`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .adapters import AttentionHandle, FamilyAdapter, PixelInputs

# Upper bound on the elements of one dS/dA chunk during the reduction (64 Mi float32 values = 256 MiB).
REDUCTION_CHUNK_ELEMENTS = 1 << 26
# Prompts differentiated together in one batched backward of a block's local graph.
PROMPT_CHUNK_SIZE = 32
# float16 gradients of a normalized score can fall below float16's smallest normal number (6e-5); the backward
# runs on cotangents scaled by this power of two, and the reduced relevance is scaled back in float32.
HALF_PRECISION_GRADIENT_SCALE = 2.0**12
# Share of the device's free memory that the block tails recorded during the trunk forward may hold; blocks past it
# are recomputed from their inputs instead (exact too, one block forward more each).
RECORDED_TAIL_MEMORY_FRACTION = 0.25
# Estimated bytes a recorded tail holds per byte of its block's input: the context O, V, the residual, the MLP's
# input and its hidden activations (4x wide in a ViT) are kept for the backward.
TAIL_BYTES_PER_INPUT_BYTE = 10


@dataclass
class TrunkCapture:
    """What the trunk forward leaves for the local recomputations.

    Attributes:
        image_features: the model's own final readout [batch, features], float32.
        block_states: per explained block index, one of: a `RecordedTail` (self-attention families, within the
            memory budget), the block's call `(args, kwargs)` to recompute it (past the budget), or its output
            tokens [batch, tokens, hidden] (pooling-head families).
    """

    image_features: torch.Tensor
    block_states: dict[int, object]


@dataclass
class RecordedTail:
    """An explained block's output tokens, with the local graph back to its attention context recorded."""

    tokens: torch.Tensor
    handle: AttentionHandle


class _TokenMeanRoute(torch.autograd.Function):
    """The MLP output projection's per-token output as the value, its token-mean twin as the gradient path.

    When the readout sees a block's output only through its token mean, and the projection is affine per token,
    the gradient reaching the per-token output is the same as if the projection had been applied to the token
    mean of its input; routing it there makes the backward through the projection one token long instead of N.
    """

    @staticmethod
    def forward(ctx, per_token: torch.Tensor, at_token_mean: torch.Tensor) -> torch.Tensor:
        return per_token.view_as(per_token)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad.sum(dim=1, keepdim=True)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (no dropout in the maps), then restore each module's own flag."""
    training = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for module, flag in training.items():
            module.training = flag


@contextmanager
def _hooks(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _block_output(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_block_output(output: object, tokens: torch.Tensor) -> object:
    if isinstance(output, tuple):
        return (tokens, *output[1:])
    if isinstance(output, list):
        return [tokens, *output[1:]]
    return tokens


def _free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it: a modest default
        return 4 << 30


class _TailRecorder:
    """Hooks that record explained blocks' tails when they run, within a memory budget.

    During the trunk forward the budget is a share of the free memory; a block past it (or offloaded) keeps only its
    call, and `_recompute_block` later reruns it alone with `always=True`.
    """

    def __init__(
        self,
        adapter: FamilyAdapter,
        layers: Sequence[int],
        score: str,
        states: dict[int, object],
        always: bool = False,
    ):
        self.adapter, self.states = adapter, states
        self.token_mean = adapter.readout_is_token_mean(score)
        self.always = always
        self.budget: int | None = None
        self.recording: int | None = None  # the block whose tail is being recorded
        self.taken: dict[str, torch.Tensor] = {}
        self.grad_mode = False
        self.in_route = False
        self.handles = []
        for index in layers:
            block = adapter.blocks[index]
            value_projection, output_projection, num_heads = adapter.attention_projections(block)
            self.handles += [
                block.register_forward_pre_hook(self._block_starts(index), with_kwargs=True),
                value_projection.register_forward_hook(self._keep_values(index, block)),
                output_projection.register_forward_pre_hook(self._context_as_leaf(index)),
                block.register_forward_hook(self._block_ends(index, num_heads)),
            ]
            if self.token_mean:
                projection = adapter.mlp_output_projection(block)
                self.handles.append(projection.register_forward_hook(self._route_through_token_mean(index)))

    def _block_starts(self, index):
        def hook(module, args, kwargs):
            inputs = next(value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor))
            estimate = TAIL_BYTES_PER_INPUT_BYTE * inputs.numel() * inputs.element_size()
            if self.always:
                self.recording, self.taken = index, {}
                return
            if self.budget is None:
                self.budget = int(RECORDED_TAIL_MEMORY_FRACTION * _free_memory_bytes(inputs.device))
            # Weights offloaded by accelerate (on "meta" until the block runs) would stay on the device as long as a
            # recorded graph holds them: such blocks keep only their inputs and are recomputed one at a time.
            offloaded = any(parameter.device.type == "meta" for parameter in module.parameters())
            if estimate <= self.budget and not offloaded:
                self.budget -= estimate
                self.recording, self.taken = index, {}
            else:
                self.states[index] = (args, kwargs)

        return hook

    def _keep_values(self, index, block):
        def hook(module, args, output):
            if self.recording == index:
                self.taken["values"] = self.adapter.attention_values(block, output.detach())

        return hook

    def _context_as_leaf(self, index):
        def hook(module, args):
            if self.recording != index:
                return None
            self.grad_mode = torch.is_grad_enabled()
            torch.set_grad_enabled(True)  # the tail from here to the block's end is recorded
            context = args[0].detach().requires_grad_(True)
            self.taken["context"] = context
            return (context, *args[1:])

        return hook

    def _route_through_token_mean(self, index):
        def hook(module, args, output):
            if self.recording != index or self.in_route:
                return None
            self.in_route = True  # calling the module again below must not route again
            try:
                at_token_mean = module(args[0].mean(dim=1, keepdim=True))
            finally:
                self.in_route = False
            return _TokenMeanRoute.apply(output.detach(), at_token_mean)

        return hook

    def _block_ends(self, index, num_heads):
        def hook(module, args, output):
            if self.recording != index:
                return None
            torch.set_grad_enabled(self.grad_mode)
            self.recording = None
            tokens = _block_output(output)
            handle = AttentionHandle(self.taken.pop("context"), self.taken.pop("values"), num_heads)
            self.states[index] = RecordedTail(tokens, handle)
            return _with_block_output(output, tokens.detach())  # the rest of the trunk builds no graph

        return hook


def run_trunk(
    adapter: FamilyAdapter, pixels: PixelInputs, layers: Sequence[int], score: str = "legrad"
) -> TrunkCapture:
    """Run the vision trunk once without gradients, recording or capturing what each explained block needs."""
    states: dict[int, object] = {}
    handles = []
    if adapter.explains_pooling_head:
        for index in layers:

            def keep_output(module, args, output, index=index):
                states[index] = _block_output(output).detach()

            handles.append(adapter.blocks[index].register_forward_hook(keep_output))
    else:
        recorder = _TailRecorder(adapter, layers, score, states)
        handles = recorder.handles
    with _hooks(handles), torch.no_grad():
        image_features = adapter.image_features(pixels)
    missing = sorted(set(layers) - set(states))
    if missing:
        raise RuntimeError(
            f"blocks {missing} did not run during the forward of {type(adapter.model).__name__}; "
            "the model's forward skips them, so they cannot be explained (for an adapter of your own: check that "
            f"its FamilySpec's `blocks` path {adapter.spec.blocks!r} names the blocks the forward runs)."
        )
    return TrunkCapture(image_features=image_features, block_states=states)


def _recompute_block(
    adapter: FamilyAdapter, index: int, call: tuple[tuple, dict], score: str
) -> tuple[torch.Tensor, AttentionHandle]:
    """Rerun block `index` alone, recording its tail as the trunk forward does; return (output tokens, handle)."""
    states: dict[int, object] = {}
    recorder = _TailRecorder(adapter, [index], score, states, always=True)
    args, kwargs = call
    with _hooks(recorder.handles), torch.no_grad():
        adapter.blocks[index](*args, **kwargs)
    tail = states[index]
    return tail.tokens, tail.handle


def _block_readout(
    adapter: FamilyAdapter, index: int, state: object, score: str
) -> Callable[[PixelInputs], tuple[torch.Tensor, AttentionHandle]]:
    """A function of the inputs giving (readout, handle) of block `index` from its trunk state.

    The block's tail (from its attention context to its output tokens) is recorded once, here; each call adds a
    readout on top of it, so an adapter that reads the prompts (`reads_prompts`) builds one readout per chunk of
    prompts on the same tail.
    """
    if isinstance(state, RecordedTail):
        return lambda pixels: (adapter.layer_features(state.tokens, pixels, score), state.handle)
    if adapter.explains_pooling_head:
        return lambda pixels: adapter.pooling_head_attention(state, pixels, score)
    tokens, handle = _recompute_block(adapter, index, state, score)
    return lambda pixels: (adapter.layer_features(tokens, pixels, score), handle)


def reduce_attention_gradient(
    context_grads: torch.Tensor, values: torch.Tensor, num_heads: int, edges: torch.Tensor | None = None
) -> torch.Tensor:
    """LeGrad's reduction of dS/dA, computed from dS/dO without materializing all of it at once.

    Args:
        context_grads: dS/dO [prompts, batch, queries, heads * head_dim].
        values: V [batch, keys, heads * head_dim].
        num_heads: number of heads.
        edges: optional bool [batch, queries, keys], the attention edges that count (a text tower's causal and
            padding mask; a query row that does not count is all False). dS/dA of the other entries is computed
            by dS/dO V^T too, but they are dropped before the mean, which runs over the rows that count.

    Returns:
        float32 [batch, prompts, keys]: mean over heads and query rows of ReLU(dS/dA), dS/dA_h = dS/dO_h @ V_h^T.
    """
    prompts, batch, queries, width = context_grads.shape
    keys = values.shape[1]
    head_dim = width // num_heads
    grads = context_grads.view(prompts, batch, queries, num_heads, head_dim).permute(1, 0, 3, 2, 4)
    values_t = values.view(batch, keys, num_heads, head_dim).permute(0, 2, 3, 1).unsqueeze(1)
    relevance = torch.zeros(batch, prompts, keys, dtype=torch.float32, device=values.device)
    per_prompt_head = batch * queries * keys
    heads_per_chunk = max(1, min(num_heads, REDUCTION_CHUNK_ELEMENTS // max(1, per_prompt_head * prompts)))
    prompts_per_chunk = max(1, min(prompts, REDUCTION_CHUNK_ELEMENTS // max(1, per_prompt_head * heads_per_chunk)))
    for p0 in range(0, prompts, prompts_per_chunk):
        for h0 in range(0, num_heads, heads_per_chunk):
            chunk_grads = grads[:, p0 : p0 + prompts_per_chunk, h0 : h0 + heads_per_chunk].float()
            chunk_values = values_t[:, :, h0 : h0 + heads_per_chunk].float()
            attention_grads = torch.matmul(chunk_grads, chunk_values)  # [batch, p, h, queries, keys]
            if edges is not None:
                attention_grads = attention_grads.masked_fill_(~edges[:, None, None], 0.0)
            relevance[:, p0 : p0 + prompts_per_chunk] += attention_grads.clamp_(min=0).sum(dim=(2, 3))
            del attention_grads  # freed before the next chunk is allocated: one chunk alive at a time
    if edges is None:
        return relevance / (num_heads * queries)
    rows = edges.any(dim=-1).sum(dim=-1).clamp_min(1).to(relevance.device)  # [batch] query rows that count
    return relevance / (num_heads * rows[:, None, None].float())


def _prompt_chunk_relevance(
    readout: torch.Tensor,
    handle: AttentionHandle,
    cotangents: torch.Tensor,
    scale: float,
    edges: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relevance [batch, chunk, keys] of one chunk of prompts, from one (batched) backward of the local graph.

    The cotangents are multiplied by `scale` (a power of two) so float16 gradients do not underflow; ReLU and means
    are positively homogeneous, so dividing the reduced relevance by `scale` gives the unscaled result. The graph is
    retained: the next chunk (and a redone one) goes back through the same block tail, which is freed when the caller
    drops the readout and the handle.
    """
    while True:
        scaled = cotangents * scale
        if scaled.shape[0] == 1:  # one prompt: a plain backward, without vmap's overhead
            (grads,) = torch.autograd.grad(readout, handle.context, grad_outputs=scaled[0], retain_graph=True)
            grads = grads.unsqueeze(0)
        else:
            (grads,) = torch.autograd.grad(
                readout, handle.context, grad_outputs=scaled, is_grads_batched=True, retain_graph=True
            )
        if scale == 1.0 or torch.isfinite(grads).all():
            break
        scale = max(1.0, scale / 256)  # overflow in half precision: back off and redo this chunk
    relevance = reduce_attention_gradient(grads, handle.values, handle.num_heads, edges)
    return relevance / scale


def layer_relevance(
    adapter: FamilyAdapter,
    capture: TrunkCapture,
    pixels: PixelInputs,
    directions: torch.Tensor,
    layers: Sequence[int],
    score: str = "legrad",
    prompt_chunk_size: int = PROMPT_CHUNK_SIZE,
    attention_edges: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-layer LeGrad relevance of every token as a key, for every prompt.

    Args:
        adapter: the model family's adapter.
        capture: the trunk capture from `run_trunk` (its block states are consumed).
        pixels: the image inputs the trunk ran on.
        directions: [batch, prompts, features]: each prompt's direction in readout space (a normalized text
            embedding, a one-hot class row); the layer-l score is `<readout^l, direction>`.
        layers: the explained block indices.
        score: "legrad" (the authors' per-layer readout) or "model" (the model's own pooling).
        prompt_chunk_size: prompts differentiated per backward; bounds memory for hundreds of prompts.
        attention_edges: optional bool [batch, queries, keys], the attention edges that count in the reduction
            (`reduce_attention_gradient`); None: all of them (a vision trunk).

    Returns:
        float32 [batch, prompts, layers, tokens], each layer's relevance laid out by the adapter's
        `attention_relevance_to_tokens` (the identity unless the explained attention runs over several sequences
        per input).
    """
    per_layer = []
    scale = HALF_PRECISION_GRADIENT_SCALE if adapter.input_dtype == torch.float16 else 1.0
    num_prompts = directions.shape[1]
    reads_prompts = adapter.reads_prompts
    for index in layers:
        state = capture.block_states.pop(index)
        with torch.enable_grad():
            readout_of = _block_readout(adapter, index, state, score)
            if not reads_prompts:
                readout, handle = readout_of(pixels)
            chunks = []
            for start in range(0, num_prompts, prompt_chunk_size):
                stop = min(start + prompt_chunk_size, num_prompts)
                if reads_prompts:  # the readout of this chunk's prompts only, on the block's shared tail
                    view, columns = adapter.prompt_chunk(pixels, start, stop)
                    readout, handle = readout_of(view)
                    chunk_directions = directions[:, start:stop, columns]
                else:
                    chunk_directions = directions[:, start:stop]
                cotangents = chunk_directions.to(device=readout.device, dtype=readout.dtype).transpose(0, 1)
                edges = None if attention_edges is None else attention_edges.to(readout.device)
                chunks.append(_prompt_chunk_relevance(readout, handle, cotangents, scale, edges))
                if reads_prompts:
                    readout = None  # this chunk's readout graph is freed before the next chunk's is built
            relevance = torch.cat(chunks, dim=1)
        del readout, state, handle, readout_of  # the block's local graph is freed before the next block's
        # [sequences, prompts, keys] -> [batch, prompts, tokens] (the identity where each input is one sequence)
        per_layer.append(adapter.attention_relevance_to_tokens(relevance, pixels).to(directions.device))
    return torch.stack(per_layer, dim=2)
