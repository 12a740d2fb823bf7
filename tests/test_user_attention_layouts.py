"""Adapters of a user's own attention layouts: grouped-query attention and a fused Q/K/V projection.

Two tiny ViT classifiers written here in torch, as a user's own model would be (patch embedding, CLS token, pre-norm
blocks, a head on the mean token), differ only in their attention: `TinyGQAViT` has 4 query heads reading 2 K/V
heads (`v_proj` gives 2 heads' width), `TinyFusedQKVViT` one `qkv` projection [Q | K | V]. Their adapters are
declared here as a user would declare them: the grouped-query one overrides `attention_values` (each K/V head
repeated for the query heads that read it) and `value_width`; the fused one only sets `FamilySpec(fused_qkv=True)`.
Registered, each is explained with raw maps equal to a straightforward reference written below (the same model by
hand, full graph, one `autograd.grad` per layer and target).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transformers_legrad
from transformers_legrad import FamilyAdapter, FamilySpec, LeGradExplainer
from transformers_legrad.adapters import IMAGE_CLASSIFICATION, registry

HIDDEN, HEADS, KV_HEADS, PATCH, SIZE, LAYERS, CLASSES = 32, 4, 2, 8, 48, 3, 5
HEAD_DIM = HIDDEN // HEADS


# --- the user's models ------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Softmax attention with `kv_heads` K/V heads shared by `HEADS` query heads, fused into `qkv` or not."""

    def __init__(self, kv_heads: int, fused: bool) -> None:
        super().__init__()
        self.kv_heads, self.fused = kv_heads, fused
        if fused:
            self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
        else:
            self.q_proj = nn.Linear(HIDDEN, HIDDEN)
            self.k_proj = nn.Linear(HIDDEN, kv_heads * HEAD_DIM)
            self.v_proj = nn.Linear(HIDDEN, kv_heads * HEAD_DIM)
        self.o_proj = nn.Linear(HIDDEN, HIDDEN)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q [batch, heads, tokens, head_dim]; K and V with their K/V heads repeated for the query heads."""
        batch, tokens, _ = x.shape
        if self.fused:
            q, k, v = self.qkv(x).view(batch, tokens, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
            return q, k, v
        q = self.q_proj(x).view(batch, tokens, HEADS, HEAD_DIM).transpose(1, 2)
        k, v = (p(x).view(batch, tokens, self.kv_heads, HEAD_DIM).transpose(1, 2) for p in (self.k_proj, self.v_proj))
        groups = HEADS // self.kv_heads
        return q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        context = F.scaled_dot_product_attention(q, k, v)  # the model's own kernel: no probabilities exposed
        return self.o_proj(context.transpose(1, 2).flatten(2))


class Block(nn.Module):
    def __init__(self, kv_heads: int, fused: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.attn = Attention(kv_heads, fused)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = (
            nn.Linear(HIDDEN, 2 * HIDDEN),
            nn.GELU(),
            nn.Linear(2 * HIDDEN, HIDDEN),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _TinyUserViT(nn.Module):
    """Patch embedding, CLS token, pre-norm blocks and a head on the normalized mean of the last block's tokens."""

    kv_heads: int
    fused: bool

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(
            num_attention_heads=HEADS,
            patch_size=PATCH,
            num_channels=3,
            image_size=SIZE,
            num_labels=CLASSES,
            id2label={i: f"class {i}" for i in range(CLASSES)},
        )
        self.patch_embed = nn.Conv2d(3, HIDDEN, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, HIDDEN))
        self.pos_embed = nn.Parameter(0.5 * torch.randn(1, 1 + (SIZE // PATCH) ** 2, HIDDEN))
        self.blocks = nn.ModuleList(Block(self.kv_heads, self.fused) for _ in range(LAYERS))
        self.norm, self.head = nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, CLASSES)
        for module in self.modules():  # random affines and biases: nothing cancels by symmetry
            if isinstance(module, (nn.LayerNorm, nn.Linear)) and module.bias is not None:
                nn.init.normal_(module.bias, std=0.1)
            if isinstance(module, nn.LayerNorm):
                nn.init.normal_(module.weight, mean=1.0, std=0.2)
        self.eval()

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(patches), -1, -1), patches], dim=1) + self.pos_embed

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(tokens.mean(dim=1)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(pixel_values)
        for block in self.blocks:
            tokens = block(tokens)
        return self.readout(tokens)


class TinyGQAViT(_TinyUserViT):
    kv_heads, fused = KV_HEADS, False


class TinyFusedQKVViT(_TinyUserViT):
    kv_heads, fused = HEADS, True


# --- their adapters ---------------------------------------------------------------------------------------------
class _TinyUserAdapter(FamilyAdapter):
    """The readout both share: the model's head on the normalized mean of a block's tokens."""

    def readout_is_token_mean(self, score: str) -> bool:
        return True

    def image_features(self, pixels):
        return self.model(**pixels.model_kwargs).float()

    def layer_features(self, tokens, pixels, score):
        return self.model.readout(tokens).float()


class TinyGQAAdapter(_TinyUserAdapter):
    """Grouped-query attention: `v_proj` gives KV_HEADS heads; V is widened to one head per query head."""

    spec = FamilySpec(
        name="tiny_gqa_vit",
        display_name="Tiny GQA ViT",
        model_classes=(TinyGQAViT,),
        base_task=IMAGE_CLASSIFICATION,
        blocks="blocks",
        attention="attn",
        value="attn.v_proj",
        output="attn.o_proj",
        score_definition="A class's score at block l is the head's logit of `norm(mean of all tokens)`.",
    )

    def attention_values(self, block, projected):
        batch, tokens, width = projected.shape
        per_head = projected.view(batch, tokens, block.attn.kv_heads, width // block.attn.kv_heads)
        return per_head.repeat_interleave(HEADS // block.attn.kv_heads, dim=2).flatten(2)

    def value_width(self, projected_width):
        return projected_width * (HEADS // KV_HEADS)


class TinyFusedQKVAdapter(_TinyUserAdapter):
    """One fused `qkv` projection: the engine takes V as its last third."""

    spec = FamilySpec(
        name="tiny_fused_qkv_vit",
        display_name="Tiny fused-QKV ViT",
        model_classes=(TinyFusedQKVViT,),
        base_task=IMAGE_CLASSIFICATION,
        blocks="blocks",
        attention="attn",
        value="attn.qkv",
        output="attn.o_proj",
        fused_qkv=True,
        score_definition="A class's score at block l is the head's logit of `norm(mean of all tokens)`.",
    )


CASES = {"gqa": (TinyGQAViT, TinyGQAAdapter), "fused_qkv": (TinyFusedQKVViT, TinyFusedQKVAdapter)}


@pytest.fixture(params=list(CASES))
def registered(request):
    """(model, adapter class) with the adapter registered for one test, the registry as before after it."""
    model_class, adapter = CASES[request.param]
    transformers_legrad.register_adapter(adapter)
    try:
        yield model_class(), adapter
    finally:
        registry.unregister(adapter)
        transformers_legrad.register_pipeline()


# --- the reference ----------------------------------------------------------------------------------------------
def reference_grid_maps(model: _TinyUserViT, pixel_values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """LeGrad by hand, float32 [batch, targets, 6, 6]: the model's forward written out with explicit softmax
    probabilities A^l, one `autograd.grad` of each layer's score `head(norm(mean Z^l))[target]` w.r.t. A^l, ReLU,
    mean over heads and query rows, the CLS key dropped, summed over all layers."""
    with torch.enable_grad():
        tokens, probabilities, outputs = model.embed(pixel_values), [], []
        for block in model.blocks:
            q, k, v = block.attn.project(block.norm1(tokens))
            attention = ((q @ k.transpose(-2, -1)) / math.sqrt(HEAD_DIM)).softmax(dim=-1)
            tokens = tokens + block.attn.o_proj((attention @ v).transpose(1, 2).flatten(2))
            tokens = tokens + block.mlp(block.norm2(tokens))
            probabilities.append(attention)
            outputs.append(tokens)
        grid = SIZE // PATCH
        maps = torch.zeros(len(pixel_values), targets.shape[1], grid, grid)
        for attention, output in zip(probabilities, outputs, strict=True):
            logits = model.readout(output)
            for b in range(len(pixel_values)):
                for k in range(targets.shape[1]):
                    (grads,) = torch.autograd.grad(logits[b, targets[b, k]], attention, retain_graph=True)
                    relevance = grads[b].clamp(min=0).mean(dim=(0, 1))[1:]
                    maps[b, k] += relevance.view(grid, grid)
    return maps


# --- the tests --------------------------------------------------------------------------------------------------
def test_each_user_layout_is_explained_exactly(registered):
    model, adapter = registered
    pixel_values = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, 3], [0, 4]])
    explainer = LeGradExplainer(model, layers="all")
    assert isinstance(explainer.adapter, adapter)
    out = explainer.explain(pixel_values=pixel_values, targets=targets)
    expected = reference_grid_maps(model, pixel_values, targets)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(out.grid_maps, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with torch.no_grad():
        logits = model(pixel_values)
    torch.testing.assert_close(out.scores, logits.gather(1, targets))


def test_grouped_query_attention_needs_its_value_width():
    """Without `value_width`, V's 2 K/V heads' width is not 4 heads x head_dim feeding `o_proj`: refused by path."""

    class Unwidened(TinyGQAAdapter):
        def value_width(self, projected_width):
            return projected_width

    with pytest.raises(TypeError, match=r"`attn.v_proj` gives 16 features, which is not 4 heads x head_dim"):
        Unwidened(TinyGQAViT())
