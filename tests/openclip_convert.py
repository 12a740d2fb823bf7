"""Tiny random-init open_clip models and their exact Hugging Face twins.

Used by the parity tests against the authors' ``legrad-torch`` package, which only wraps open_clip models: we
build a tiny open_clip CLIP (ViT tower) or SigLIP (timm ViT trunk with a MAP attention-pool head), copy its weights
into ``transformers.CLIPModel`` / ``transformers.SiglipModel``, and can then run both LeGrad implementations on the
*same* network. Nothing is downloaded: every model is built from code with random weights.

Requires ``open_clip_torch`` (2.23.0, the version ``legrad-torch`` is written against) and ``timm``; import this
module only after ``pytest.importorskip`` of both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import open_clip
import timm
import torch
import torch.nn as nn
from open_clip.timm_model import TimmModel
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, TextTransformer, VisionTransformer
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

__all__ = [
    "build_openclip_clip",
    "build_openclip_siglip",
    "clip_to_hf",
    "siglip_to_hf",
    "spread_weights_",
]

# Tiny text towers: the parity tests pass text embeddings directly, but converting the text tower too lets a test
# check a prompt end to end. The two highest ids play BOS/EOS so open_clip's argmax pooling (EOS = highest id)
# and HF CLIP's "first eos_token_id" pooling pick the same position.
TEXT_VOCAB = 64
TEXT_CONTEXT = 8


# ----------------------------------------------------------------------------------------------------------------
# Building the open_clip models
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def spread_weights_(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter so the tiny network has peaked, head-specific attention.

    open_clip/timm initialise with std 0.02, which on a 32-wide random model gives almost uniform attention and
    near-constant LeGrad maps: a parity check on such maps would hardly discriminate (e.g. a head-averaging or a
    query/key transposition bug would still pass). Matrices get N(0, 1/fan_in) so activations stay O(1) and q.k
    logits vary by O(1); vectors (biases, LayerNorm, embeddings, latent probes) get O(0.1..1) spread.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim >= 2 and leaf not in ("positional_embedding", "pos_embed", "latent", "probe", "class_embedding"):
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) * fan_in**-0.5)
        elif "ln" in name or "norm" in name:
            # LayerNorm weights near 1, biases near 0: keep the normalisation meaningful.
            base = 1.0 if leaf == "weight" else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        elif leaf == "logit_scale" or leaf == "logit_bias":
            continue  # keep the model's own temperature/bias
        else:
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return module


def build_openclip_clip(
    seed: int = 0,
    *,
    width: int = 32,
    layers: int = 3,
    heads: int = 4,
    patch_size: int = 8,
    image_size: int = 48,
    embed_dim: int = 24,
    quick_gelu: bool = True,
) -> open_clip.CLIP:
    """A tiny open_clip ``CLIP`` with a ViT image tower, random weights, eval mode, float32.

    ``quick_gelu=True`` mirrors the OpenAI checkpoints (and HF CLIP's default activation).
    """
    torch.manual_seed(seed)
    vision_cfg = open_clip.CLIPVisionCfg(
        layers=layers, width=width, head_width=width // heads, patch_size=patch_size, image_size=image_size
    )
    text_cfg = open_clip.CLIPTextCfg(
        context_length=TEXT_CONTEXT, vocab_size=TEXT_VOCAB, width=width, heads=heads, layers=2
    )
    model = open_clip.CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=quick_gelu)
    spread_weights_(model, seed)
    return model.eval()


@contextlib.contextmanager
def _tiny_timm_models(**overrides) -> Iterator[None]:
    """Make ``timm.create_model`` build a shrunken variant while open_clip's ``TimmModel`` constructs its trunk.

    ``TimmModel`` only forwards ``num_classes``/``global_pool``/``pretrained`` to timm, so there is no config
    field for depth or width; patching the call for the duration of one construction avoids registering a
    global timm model name just for tests.
    """
    real_create = timm.create_model

    def create(model_name, *args, **kwargs):
        return real_create(model_name, *args, **{**kwargs, **overrides})

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = real_create


def build_openclip_siglip(
    seed: int = 0,
    *,
    width: int = 32,
    layers: int = 3,
    heads: int = 4,
    patch_size: int = 8,
    image_size: int = 48,
) -> open_clip.CustomTextCLIP:
    """A tiny open_clip SigLIP (``CustomTextCLIP`` whose ``visual`` is a ``TimmModel``), as ``LeWrapper`` expects.

    Same recipe as open_clip's ``ViT-B-16-SigLIP`` config (timm ``vit_base_patch16_siglip_224`` trunk, MAP pooling,
    no extra projection, non-causal text tower pooled on the last token with a biased projection, LayerNorm eps
    1e-6), only shrunk. The image embedding width equals the trunk width because ``timm_proj='none'``.
    """
    torch.manual_seed(seed)
    vision_cfg = open_clip.CLIPVisionCfg(
        image_size=image_size,
        timm_model_name="vit_base_patch16_siglip_224",
        timm_model_pretrained=False,
        timm_pool="map",
        timm_proj="none",
    )
    text_cfg = open_clip.CLIPTextCfg(
        context_length=TEXT_CONTEXT,
        vocab_size=TEXT_VOCAB,
        width=width,
        heads=heads,
        layers=2,
        no_causal_mask=True,
        proj_bias=True,
        pool_type="last",
        norm_kwargs={"eps": 1e-6},
    )
    with _tiny_timm_models(depth=layers, embed_dim=width, num_heads=heads, patch_size=patch_size, img_size=image_size):
        model = open_clip.CustomTextCLIP(width, vision_cfg, text_cfg, init_logit_bias=-10.0)
    spread_weights_(model, seed)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Weight conversion
# ----------------------------------------------------------------------------------------------------------------


def _act_name(act: nn.Module) -> str:
    """HF ``hidden_act`` string for an open_clip/timm activation module (fail loudly on anything else)."""
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        # HF "gelu" is the exact erf GELU; "gelu_pytorch_tanh" (HF SigLIP's default) would NOT match timm/open_clip.
        return {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[act.approximate]
    raise ValueError(f"unsupported activation {type(act).__name__}")


def _copy_(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"shape mismatch: {tuple(dst.shape)} <- {tuple(src.shape)}")
    dst.copy_(src)


def _copy_linear(dst: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    _copy_(dst.weight, weight)
    if bias is None:
        if dst.bias is not None:
            raise ValueError("source linear has no bias but destination has one")
    else:
        _copy_(dst.bias, bias)


def _copy_ln(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    if abs(dst.eps - src.eps) > 1e-12:
        raise ValueError(f"LayerNorm eps differ: {dst.eps} vs {src.eps}")
    _copy_(dst.weight, src.weight)
    _copy_(dst.bias, src.bias)


def _copy_openclip_block(dst: nn.Module, src: ResidualAttentionBlock) -> None:
    """open_clip ResidualAttentionBlock (nn.MultiheadAttention, packed in_proj) -> HF CLIP/SigLIP encoder layer."""
    for attr in ("ls_1", "ls_2", "ln_attn"):
        if not isinstance(getattr(src, attr, nn.Identity()), nn.Identity):
            raise ValueError(f"open_clip block has a non-identity {attr}; HF layers have no equivalent")
    _copy_ln(dst.layer_norm1, src.ln_1)
    wq, wk, wv = src.attn.in_proj_weight.chunk(3, dim=0)  # nn.MultiheadAttention packs [q; k; v] row-wise
    bq, bk, bv = src.attn.in_proj_bias.chunk(3, dim=0)
    _copy_linear(dst.self_attn.q_proj, wq, bq)
    _copy_linear(dst.self_attn.k_proj, wk, bk)
    _copy_linear(dst.self_attn.v_proj, wv, bv)
    _copy_linear(dst.self_attn.out_proj, src.attn.out_proj.weight, src.attn.out_proj.bias)
    _copy_ln(dst.layer_norm2, src.ln_2)
    _copy_linear(dst.mlp.fc1, src.mlp.c_fc.weight, src.mlp.c_fc.bias)
    _copy_linear(dst.mlp.fc2, src.mlp.c_proj.weight, src.mlp.c_proj.bias)


def _copy_openclip_text(dst_text_model: nn.Module, src: open_clip.CLIP | TextTransformer) -> None:
    """Token/position embeddings, blocks and final LayerNorm of an open_clip text tower -> HF ``text_model``."""
    emb = dst_text_model.embeddings
    _copy_(emb.token_embedding.weight, src.token_embedding.weight)
    _copy_(emb.position_embedding.weight, src.positional_embedding)
    for dst_blk, src_blk in zip(dst_text_model.encoder.layers, src.transformer.resblocks, strict=True):
        _copy_openclip_block(dst_blk, src_blk)
    _copy_ln(dst_text_model.final_layer_norm, src.ln_final)


def _text_config_kwargs(transformer: nn.Module, first_block: ResidualAttentionBlock, context_length: int) -> dict:
    return dict(
        vocab_size=TEXT_VOCAB,
        hidden_size=transformer.width,
        intermediate_size=first_block.mlp.c_fc.out_features,
        num_hidden_layers=transformer.layers,
        num_attention_heads=first_block.attn.num_heads,
        max_position_embeddings=context_length,
        hidden_act=_act_name(first_block.mlp.gelu),
        layer_norm_eps=first_block.ln_1.eps,
        pad_token_id=0,
        bos_token_id=TEXT_VOCAB - 2,
        eos_token_id=TEXT_VOCAB - 1,
    )


@torch.no_grad()
def clip_to_hf(oc: open_clip.CLIP) -> CLIPModel:
    """Exact ``transformers.CLIPModel`` twin of a (tiny) open_clip ``CLIP`` ViT model, float32, eval mode.

    Image tower and projection, text tower and projection and ``logit_scale`` are all copied. Text parity holds
    for token ids whose EOS is the highest id (open_clip pools at argmax, HF at the first ``eos_token_id``).
    """
    v: VisionTransformer = oc.visual
    if not isinstance(v, VisionTransformer) or v.attn_pool is not None:
        raise ValueError("expected an open_clip ViT image tower without attentional pooler")
    if v.final_ln_after_pool or v.pool_type != "tok" or isinstance(v.ln_pre, nn.Identity):
        # HF CLIP = ln_pre, CLS-token pooling, LayerNorm on the pooled token (same as per-token then pool).
        raise ValueError("open_clip ViT variant has no HF CLIP equivalent")
    blk0: ResidualAttentionBlock = v.transformer.resblocks[0]
    tblk0: ResidualAttentionBlock = oc.transformer.resblocks[0]
    if oc.text_pool_type != "argmax" or getattr(oc, "text_projection", None) is None:
        raise ValueError("open_clip text tower variant has no HF CLIP equivalent")
    config = CLIPConfig(
        vision_config=dict(
            hidden_size=v.conv1.out_channels,
            intermediate_size=blk0.mlp.c_fc.out_features,
            num_hidden_layers=len(v.transformer.resblocks),
            num_attention_heads=blk0.attn.num_heads,
            num_channels=v.conv1.in_channels,
            image_size=v.image_size[0],
            patch_size=v.patch_size[0],
            hidden_act=_act_name(blk0.mlp.gelu),
            layer_norm_eps=blk0.ln_1.eps,
        ),
        text_config=_text_config_kwargs(oc.transformer, tblk0, oc.context_length),
        projection_dim=v.proj.shape[1],
        logit_scale_init_value=float(oc.logit_scale),
    )
    hf = CLIPModel(config).float().eval()

    vm = hf.vision_model
    _copy_(vm.embeddings.class_embedding, v.class_embedding)
    _copy_(vm.embeddings.patch_embedding.weight, v.conv1.weight)  # both bias-free convs
    _copy_(vm.embeddings.position_embedding.weight, v.positional_embedding)  # [1 + h*w, D], CLS first
    _copy_ln(vm.pre_layrnorm, v.ln_pre)
    for dst, src in zip(vm.encoder.layers, v.transformer.resblocks, strict=True):
        _copy_openclip_block(dst, src)
    _copy_ln(vm.post_layernorm, v.ln_post)
    _copy_(hf.visual_projection.weight, v.proj.t())  # open_clip: x @ proj; HF Linear: x @ W^T

    _copy_openclip_text(hf.text_model, oc)
    _copy_(hf.text_projection.weight, oc.text_projection.t())
    _copy_(hf.logit_scale, oc.logit_scale.reshape(hf.logit_scale.shape))
    return hf


@torch.no_grad()
def siglip_to_hf(oc: open_clip.CustomTextCLIP) -> SiglipModel:
    """Exact ``transformers.SiglipModel`` twin of a (tiny) open_clip SigLIP (timm trunk + MAP head), float32, eval.

    Mapping: patch_embed.proj -> embeddings.patch_embedding, pos_embed -> position_embedding, blocks.i ->
    encoder.layers.i (qkv split into q/k/v), trunk.norm -> post_layernorm, attn_pool.{latent, q+kv, proj, norm, mlp}
    -> head.{probe, attention.in_proj, attention.out_proj, layernorm, mlp}; text tower, ``logit_scale`` and
    ``logit_bias`` too.
    """
    if not isinstance(oc.visual, TimmModel):
        raise ValueError("expected an open_clip SigLIP whose image tower is a TimmModel")
    trunk = oc.visual.trunk
    pool = trunk.attn_pool
    if len(oc.visual.head) != 0 or not isinstance(trunk.head, nn.Identity):
        raise ValueError("timm SigLIP trunk with an extra projection head is not supported")
    # The HF SigLIP vision tower has no pre-norm, no CLS/register tokens, no layer scale, no qk-norm, no fc_norm,
    # and its MAP head has no positional embedding and a single probe: refuse anything else instead of
    # silently converting a different network.
    checks = {
        "norm_pre": isinstance(trunk.norm_pre, nn.Identity),
        "cls_token": trunk.cls_token is None and trunk.num_prefix_tokens == 0,
        "fc_norm": isinstance(trunk.fc_norm, nn.Identity),
        "attn_pool.pos_embed": pool.pos_embed is None,
        "attn_pool.qk_norm": isinstance(pool.q_norm, nn.Identity) and isinstance(pool.k_norm, nn.Identity),
        "attn_pool.latent_len": pool.latent_len == 1 and pool.pool == "token",
    }
    for blk in trunk.blocks:
        checks["blocks.ls"] = checks.get("blocks.ls", True) and all(
            isinstance(m, nn.Identity) for m in (blk.ls1, blk.ls2, blk.attn.q_norm, blk.attn.k_norm, blk.attn.norm)
        )
        checks["blocks.mlp.norm"] = checks.get("blocks.mlp.norm", True) and isinstance(blk.mlp.norm, nn.Identity)
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"timm SigLIP variant has no HF equivalent: {bad}")

    blk0 = trunk.blocks[0]
    act = _act_name(blk0.mlp.act)
    if _act_name(pool.mlp.act) != act:
        raise ValueError("HF SigLIP uses one activation for trunk and head; timm model differs")
    eps = blk0.norm1.eps
    text: TextTransformer = oc.text
    tblk0: ResidualAttentionBlock = text.transformer.resblocks[0]
    if text.attn_mask is not None or text.pool_type != "last" or not isinstance(text.text_projection, nn.Linear):
        raise ValueError("open_clip SigLIP text tower variant has no HF equivalent")
    if _act_name(tblk0.mlp.gelu) != act or tblk0.ln_1.eps != eps:
        raise ValueError("HF SigLIP shares hidden_act/layer_norm_eps between towers; open_clip towers differ")
    image_size = trunk.patch_embed.img_size
    text_cfg = _text_config_kwargs(text.transformer, tblk0, text.context_length)
    text_cfg["projection_size"] = text.text_projection.out_features
    config = SiglipConfig(
        vision_config=dict(
            hidden_size=trunk.embed_dim,
            intermediate_size=blk0.mlp.fc1.out_features,
            num_hidden_layers=len(trunk.blocks),
            num_attention_heads=blk0.attn.num_heads,
            num_channels=trunk.patch_embed.proj.in_channels,
            image_size=image_size[0],
            patch_size=trunk.patch_embed.patch_size[0],
            hidden_act=act,
            layer_norm_eps=eps,
        ),
        text_config=text_cfg,
    )
    hf = SiglipModel(config).float().eval()

    vm = hf.vision_model
    _copy_(vm.embeddings.patch_embedding.weight, trunk.patch_embed.proj.weight)
    _copy_(vm.embeddings.patch_embedding.bias, trunk.patch_embed.proj.bias)
    _copy_(vm.embeddings.position_embedding.weight, trunk.pos_embed[0])  # [1, h*w, D] row-major grid, no CLS
    for dst, src in zip(vm.encoder.layers, trunk.blocks, strict=True):
        _copy_ln(dst.layer_norm1, src.norm1)
        wq, wk, wv = src.attn.qkv.weight.chunk(3, dim=0)  # timm reshapes qkv output as (3, heads, head_dim)
        bq, bk, bv = src.attn.qkv.bias.chunk(3, dim=0)
        _copy_linear(dst.self_attn.q_proj, wq, bq)
        _copy_linear(dst.self_attn.k_proj, wk, bk)
        _copy_linear(dst.self_attn.v_proj, wv, bv)
        _copy_linear(dst.self_attn.out_proj, src.attn.proj.weight, src.attn.proj.bias)
        _copy_ln(dst.layer_norm2, src.norm2)
        _copy_linear(dst.mlp.fc1, src.mlp.fc1.weight, src.mlp.fc1.bias)
        _copy_linear(dst.mlp.fc2, src.mlp.fc2.weight, src.mlp.fc2.bias)
    _copy_ln(vm.post_layernorm, trunk.norm)

    head = vm.head
    _copy_(head.probe, pool.latent)
    # nn.MultiheadAttention packs [q; k; v]; timm's kv Linear outputs (2, heads, head_dim), i.e. [k; v].
    _copy_(head.attention.in_proj_weight, torch.cat([pool.q.weight, pool.kv.weight], dim=0))
    _copy_(head.attention.in_proj_bias, torch.cat([pool.q.bias, pool.kv.bias], dim=0))
    _copy_linear(head.attention.out_proj, pool.proj.weight, pool.proj.bias)
    _copy_ln(head.layernorm, pool.norm)
    _copy_linear(head.mlp.fc1, pool.mlp.fc1.weight, pool.mlp.fc1.bias)
    _copy_linear(head.mlp.fc2, pool.mlp.fc2.weight, pool.mlp.fc2.bias)

    _copy_openclip_text(hf.text_model, text)
    _copy_linear(hf.text_model.head, text.text_projection.weight, text.text_projection.bias)
    _copy_(hf.logit_scale, oc.logit_scale.reshape(hf.logit_scale.shape))
    _copy_(hf.logit_bias, oc.logit_bias.reshape(hf.logit_bias.shape))
    return hf
