"""timm vision transformers loaded through transformers: `TimmWrapperForImageClassification` (classes) and
`TimmWrapperModel` (a backbone, explained along `directions=` / `reference_images=`).

The wrapper holds a timm model in `model.timm_model`; this adapter reads everything from it, per model, since one
wrapper class stands for every timm architecture. Explained: timm's `VisionTransformer` (ViT, DeiT 3, ViTs with
register tokens, timm SigLIP with its `global_pool="map"` head) and `Eva` (EVA-02: RoPE, SwiGLU; grouped-query
attention), with pre-norm blocks. Anything else (a ConvNeXt, a post-norm or parallel block, a `"prr"` pool) is
refused with a `TypeError` naming what is not supported (a hybrid ViT, whose patches come from a convolutional stem,
too).

- **Readout, `score="legrad"`**: the pool replaced by the mean over ALL tokens, each norm as the model has it
  (`nn.Identity` or not): `head(fc_norm(norm(mean Z)))`, the logits of a classifier; a backbone's head is an
  identity and its readout is normalized, so a direction's score is a cosine.
- **`global_pool="map"`** (`attn_pool`, an `AttentionPoolLatent`): explained through the pooling head's attention
  (recomputed by hand so its context is a differentiable handle, as for SigLIP), applied to the raw block output
  for `score="legrad"` (as the authors' timm code does), after the final `norm` for `score="model"`.
- **`score="model"`**: the model's own pooling, `forward_head(norm(Z))` (CLS, average or map pool, fc_norm, head).
- **Attention**: A is the softmax output whatever comes before it (qk_norm, RoPE), so the engine's identity
  dS/dA = dS/dO V^T holds. The context leaf is taken at the input of `attn.norm` (an identity unless the model
  normalizes the context), so the gated attention's sigmoid gate (a function of the block's input, not of A) and
  that norm are part of the recorded tail. V is the last third of the fused `attn.qkv`, or `attn.v_proj` with each
  K/V head repeated for the query heads that read it (grouped-query attention, `repeat_interleave` as timm does).
  EVA's fused projection with separate `q_bias`/`v_bias` calls `F.linear` with the qkv weight and never runs the
  `qkv` module: there V is computed from the block's `norm1` output (the attention's input) with the V rows of
  that weight and `v_bias`, exactly as the model computes it.
- **Prefix tokens**: timm's `num_prefix_tokens` (CLS and registers, DeiT's distillation token), dropped from maps.
- **Sizes**: a model built with `dynamic_img_size=True` takes any multiple of its patch size; otherwise only its
  own `img_size`. The timm image processor applies the checkpoint's fixed transform, so `image_size=` is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONE_NOTES, BackboneAdapter
from .base import (
    FEATURE_EXTRACTION,
    IMAGE_CLASSIFICATION,
    AttentionHandle,
    FamilyAdapter,
    FamilySpec,
    HubCheckpoint,
    PixelInputs,
)
from .classifiers import CLASSIFIER_NOTES
from .registry import register
from .siglip import pooling_head_context

#: timm model classes (by name, so that importing this package never needs timm) and their blocks and attentions.
TIMM_MODELS = ("VisionTransformer", "VisionTransformerDistilled", "Eva")
TIMM_BLOCKS = ("Block", "EvaBlock")
TIMM_ATTENTIONS = ("Attention", "AttentionRope", "EvaAttention")
#: The poolings this adapter reads: the CLS token, means and maxima over the patches, or the attention-pooling head.
TIMM_POOLS = ("token", "avg", "avgmax", "max", "map")

TIMM_SCORE = (
    "A class's score at block l is the classifier's logit for that class computed from that block's output tokens "
    "with timm's own norms and head, the pool replaced by the mean over all tokens: "
    '`s^l = head(fc_norm(norm(mean of all tokens)))[class]`. With an attention-pooling head (`global_pool="map"`, '
    "timm's SigLIP) the head is applied to the block's raw output tokens, `head(fc_norm(attn_pool(Z^l)))`, and the "
    "gradient is taken with respect to the pooling head's attention probabilities."
)
TIMM_BACKBONE_SCORE = (
    "A direction's score at block l is the cosine between the direction `d` (a given feature vector, or a reference "
    "image's own normalized pooled embedding) and the model's pooled feature computed from that block's output "
    "tokens with timm's own norms, the pool replaced by the mean over all tokens: "
    "`s^l = <d, normalize(fc_norm(norm(mean of all tokens)))>`. With an attention-pooling head "
    "(`global_pool=\"map\"`, timm's SigLIP) the head is applied to the block's raw output tokens, "
    "`normalize(fc_norm(attn_pool(Z^l)))`, and the gradient is taken with respect to the pooling head's attention "
    "probabilities."
)
TIMM_NOTES = (
    '- **timm.** Needs the `timm` extra (`pip install "transformers-legrad[timm]"`). The timm image processor '
    "applies the checkpoint's own fixed transform: explain at other sizes by passing `pixel_values` to a model "
    "built with `dynamic_img_size=True`.",
)
#: Representative paths (a ViT's); the adapter reads each model's own modules (`attention_projections`).
TIMM_LAYOUT = {
    "blocks": "timm_model.blocks",
    "attention": "attn",
    "value": "attn.qkv",
    "output": "attn.norm",
    "fused_qkv": True,
    "mlp_output": "mlp.fc2",
}


def _names(module: nn.Module) -> tuple[str, ...]:
    return tuple(cls.__name__ for cls in type(module).__mro__)


class _TimmAdapter(FamilyAdapter):
    """What both wrapper classes share: structure, V, pixels and the pooled features of one block's tokens."""

    # --- structure -----------------------------------------------------------------------------------------
    @property
    def timm_model(self) -> nn.Module:
        return self.model.timm_model

    def check_structure(self) -> None:
        """Refuse (TypeError) timm models whose attention this adapter does not read exactly."""
        wrapper = type(self.model).__name__
        timm_model = getattr(self.model, "timm_model", None)
        kind = type(timm_model).__name__
        if timm_model is None or not set(TIMM_MODELS) & set(_names(timm_model)):
            raise TypeError(
                f"{wrapper} wraps a timm {kind}: only ViT-style timm models with global self-attention over patch "
                f"tokens are explained (timm's {', '.join(TIMM_MODELS)}: ViT, DeiT 3, EVA-02, SigLIP, ViTs with "
                "registers), not convolutional or windowed ones."
            )
        embed = getattr(timm_model, "patch_embed", None)
        if "PatchEmbed" not in _names(embed):
            raise TypeError(
                f"this timm {kind} embeds its patches with a {type(embed).__name__}, not timm's PatchEmbed: hybrid "
                "models (a convolutional stem such as a ResNet before the transformer, e.g. vit_*_r*_*) are not "
                "explained, since their patch grid and input channels are not those of a patch embedding; use a "
                "plain ViT checkpoint."
            )
        if getattr(self.model, "features_only", False):
            raise TypeError(f"{wrapper} was built with `features_only=True`: it has no pooled feature to explain.")
        pool = "map" if self.attention_pool is not None else getattr(timm_model, "global_pool", None)
        if pool not in TIMM_POOLS or (pool == "map" and type(self.attention_pool).__name__ != "AttentionPoolLatent"):
            raise TypeError(
                f"this timm {kind} pools with global_pool={timm_model.global_pool!r}; LeGrad explains the poolings "
                f"{', '.join(repr(p) for p in TIMM_POOLS)} ('map' with timm's AttentionPoolLatent)."
            )
        for index, block in enumerate(timm_model.blocks):
            self._check_block(index, block, kind)

    def _check_block(self, index: int, block: nn.Module, kind: str) -> None:
        attention = getattr(block, "attn", None)
        if type(block).__name__ not in TIMM_BLOCKS or type(attention).__name__ not in TIMM_ATTENTIONS:
            raise TypeError(
                f"block {index} of this timm {kind} is a {type(block).__name__} with a "
                f"{type(attention).__name__}: LeGrad explains pre-norm blocks ({', '.join(TIMM_BLOCKS)}) with "
                f"global self-attention ({', '.join(TIMM_ATTENTIONS)}), not post-norm, parallel or relative-position "
                "blocks."
            )
        if not isinstance(getattr(block.mlp, "fc2", None), nn.Linear):
            raise TypeError(
                f"block {index}'s MLP ({type(block.mlp).__name__}) has no `fc2` Linear output projection; "
                "LeGrad explains timm's Mlp, GluMlp and SwiGLU."
            )

    @property
    def attention_pool(self) -> nn.Module | None:
        return getattr(self.timm_model, "attn_pool", None)

    @property
    def explains_pooling_head(self) -> bool:  # per model: only `global_pool="map"` models have the head
        return self.attention_pool is not None

    @property
    def blocks(self) -> nn.Module:
        return self.timm_model.blocks

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.timm_model.num_prefix_tokens)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Pixels per patch (height, width)."""
        height, width = self.timm_model.patch_embed.patch_size
        return int(height), int(width)

    @property
    def patch_size(self) -> int:
        return max(self.patch_grid)

    @property
    def num_channels(self) -> int:
        return int(self.timm_model.patch_embed.proj.in_channels)

    @property
    def num_heads(self) -> int:
        return int(self.blocks[0].attn.num_heads)

    def attention_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module, int]:
        """(the module whose output gives V, `attn.norm` whose input is the context, number of query heads)."""
        attention = block.attn
        if self._v_from_attention_input(attention):
            value = block.norm1  # the fused qkv module never runs: V from the attention's input
        elif getattr(attention, "qkv", None) is not None:
            value = attention.qkv
        else:
            value = attention.v_proj
        return value, attention.norm, int(attention.num_heads)

    @staticmethod
    def _v_from_attention_input(attention: nn.Module) -> bool:
        """EVA's fused qkv with `q_bias`/`v_bias`: the model calls `F.linear` with the qkv weight, not the module."""
        return getattr(attention, "qkv", None) is not None and getattr(attention, "q_bias", None) is not None

    def attention_values(self, block: nn.Module, projected: torch.Tensor) -> torch.Tensor:
        """V [batch, tokens, heads * head_dim] from the hooked module's output (see `attention_projections`)."""
        attention = block.attn
        if self._v_from_attention_input(attention):
            width = attention.qkv.weight.shape[0] // 3
            return F.linear(projected, attention.qkv.weight[2 * width :], attention.v_bias)
        if getattr(attention, "qkv", None) is not None:  # fused: the last third (timm has no fused GQA), copied
            return projected[..., 2 * (projected.shape[-1] // 3) :].contiguous()
        groups = int(getattr(attention, "num_kv_groups", 1))
        if groups == 1:
            return projected
        batch, tokens, _ = projected.shape
        per_head = projected.view(batch, tokens, attention.num_kv_heads, attention.head_dim)
        return per_head.repeat_interleave(groups, dim=2).reshape(batch, tokens, -1)

    def mlp_output_projection(self, block: nn.Module) -> nn.Module:
        return block.mlp.fc2

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad" and not self.explains_pooling_head

    # --- inputs --------------------------------------------------------------------------------------------
    @property
    def native_image_size(self) -> tuple[int, int] | None:
        """The only input size of a model without `dynamic_img_size`; None: any multiple of the patch size."""
        if getattr(self.timm_model, "dynamic_img_size", False):
            return None
        height, width = self.timm_model.patch_embed.img_size
        return int(height), int(width)

    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        pixels = super().prepare_pixels(pixel_values, **extra)
        pixels.model_kwargs.pop("interpolate_pos_encoding", None)  # timm takes no such flag
        height, width = pixel_values.shape[-2:]
        native = self.native_image_size
        if native is not None and (height, width) != native:
            raise ValueError(
                f"`pixel_values` of {height}x{width} pixels, but this timm model takes only {native[0]}x{native[1]} "
                "(it was built without `dynamic_img_size=True`); resize the images to that size, or use the "
                "checkpoint's processor."
            )
        patch_h, patch_w = self.patch_grid
        if height % patch_h or width % patch_w:
            raise ValueError(
                f"`pixel_values` of {height}x{width} pixels is not a whole number of {patch_h}x{patch_w} patches; "
                "resize or crop the images to a multiple of the patch size."
            )
        pixels.grid_shapes = [(height // patch_h, width // patch_w)] * pixels.batch_size
        return pixels

    def processor_size_kwargs(self, image_processor, image_size: tuple[int, int]) -> dict[str, object]:
        raise ValueError(
            "the timm image processor applies the checkpoint's fixed transform and cannot resize to `image_size`; "
            "explain at the model's own size, or pass `pixel_values` of another size to a timm model built with "
            "`dynamic_img_size=True`."
        )

    # --- readout -------------------------------------------------------------------------------------------
    def layer_logits(self, tokens: torch.Tensor, score: str) -> torch.Tensor:
        """The head's output [batch, classes or width] from one block's output tokens [batch, tokens, hidden]."""
        timm_model = self.timm_model
        if score == "model":
            return timm_model.forward_head(timm_model.norm(tokens))
        return self.head(timm_model.fc_norm(timm_model.norm(tokens.mean(dim=1))))

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        """The classifier (an identity in a backbone) on a pre-logits feature; DeiT's distilled models average
        their two heads."""
        timm_model = self.timm_model
        head_dist = getattr(timm_model, "head_dist", None)
        if head_dist is None:
            return timm_model.head(feature)
        return (timm_model.head(feature) + head_dist(feature)) / 2

    def pooled_by_head(self, tokens: torch.Tensor, score: str) -> tuple[torch.Tensor, AttentionHandle]:
        """(the head's output [batch, classes or width], handle on `attn_pool`'s attention) of one block's tokens."""
        timm_model, pool = self.timm_model, self.attention_pool
        if score == "model":
            tokens = timm_model.norm(tokens)
        skipped = 0 if getattr(timm_model, "pool_include_prefix", True) else self.num_prefix_tokens
        with torch.no_grad():
            probabilities, values = attention_pool_probabilities(pool, tokens[:, skipped:])
            context = pooling_head_context(probabilities, values)
        context.requires_grad_(True)
        output = timm_model.head(timm_model.fc_norm(attention_pool_output(pool, context)))
        values = F.pad(values, (0, 0, skipped, 0))  # prefix keys the head does not read: zero relevance, dropped
        return output, AttentionHandle(context=context, values=values, num_heads=pool.num_heads)


# --- timm's AttentionPoolLatent, written out ---------------------------------------------------------------------
def attention_pool_probabilities(pool: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent queries of an `AttentionPoolLatent` attending over `tokens` [batch, keys, hidden].

    Returns:
        (probabilities [batch, heads, latents, keys], values [batch, keys, heads * head_dim]).
    """
    batch, keys, _ = tokens.shape
    heads, head_dim = pool.num_heads, pool.head_dim
    if pool.pos_embed is not None:
        tokens = tokens + pool.pos_embed.unsqueeze(0).to(tokens.dtype)
    query = pool.q(pool.latent.expand(batch, -1, -1)).reshape(batch, pool.latent_len, heads, head_dim).transpose(1, 2)
    key, values = pool.kv(tokens).reshape(batch, keys, 2, heads * head_dim).unbind(2)
    key = key.reshape(batch, keys, heads, head_dim).transpose(1, 2)
    query, key = pool.q_norm(query), pool.k_norm(key)
    logits = (query * pool.scale) @ key.transpose(-2, -1)
    return logits.softmax(dim=-1), values


def attention_pool_output(pool: nn.Module, context: torch.Tensor) -> torch.Tensor:
    """The pool's output [batch, width] from its attention context: proj, the residual MLP, then its latent pool."""
    pooled = pool.proj_drop(pool.proj(context))
    if pool.mlp is not None:
        pooled = pooled + pool.mlp(pool.norm(pooled))
    if pool.pool == "token":
        return pooled[:, 0]
    if pool.pool == "avg":
        return pooled.mean(dim=1)
    return pooled


@register
class TimmClassifierAdapter(_TimmAdapter):
    """`TimmWrapperForImageClassification`: the timm model's logits, `head(fc_norm(norm(mean Z)))` per block."""

    spec = FamilySpec(
        name="timm",
        display_name="timm ViT",
        model_classes=("TimmWrapperForImageClassification",),
        base_task=IMAGE_CLASSIFICATION,
        model_types=("timm_wrapper",),
        **TIMM_LAYOUT,
        score_definition=TIMM_SCORE,
        reading_notes=(*CLASSIFIER_NOTES, *TIMM_NOTES),
    )

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        return self.model(**pixels.model_kwargs).logits.float()

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        return self.layer_logits(tokens, score).float()

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        logits, handle = self.pooled_by_head(tokens, score)
        return logits.float(), handle


@register
class TimmBackboneAdapter(_TimmAdapter, BackboneAdapter):
    """`TimmWrapperModel`: the pooled feature (no head), normalized; directions are explained in its space."""

    spec = FamilySpec(
        name="timm_backbone",
        display_name="timm ViT backbone",
        model_classes=("TimmWrapperModel",),
        base_task=FEATURE_EXTRACTION,
        **TIMM_LAYOUT,
        score_definition=TIMM_BACKBONE_SCORE,
        reading_notes=(*BACKBONE_NOTES, *TIMM_NOTES),
        checkpoints=(
            HubCheckpoint(
                model_id="timm/vit_base_patch16_siglip_224.webli",
                license="apache-2.0",
                native_resolution=224,
                patch_size=16,
                # counted from timm's architecture on the meta device (the whole checkpoint is the image tower)
                parameters_millions=93,
                image_tower_parameters_millions=93,
                image_size=224,
                image_size_note="the timm image processor applies the checkpoint's fixed 224 x 224 transform",
            ),
        ),
    )

    @property
    def embedding_dim(self) -> int:
        return int(self.timm_model.num_features)

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        output = self.model(**pixels.model_kwargs, do_pooling=True)
        return F.normalize(output.pooler_output.float(), dim=-1)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        return F.normalize(self.layer_logits(tokens, score).float(), dim=-1)

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        feature, handle = self.pooled_by_head(tokens, score)
        return F.normalize(feature.float(), dim=-1), handle
