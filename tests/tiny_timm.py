"""Tiny random timm vision transformers wrapped by transformers (`TimmWrapperConfig`), saved and loaded back.

Each factory seeds torch, builds `TimmWrapperForImageClassification` or `TimmWrapperModel` from a
`TimmWrapperConfig(architecture=..., model_args={...})` (hidden 32, 4 blocks, 4 heads, patch 8, 48 px), perturbs
LayerNorm affines and zero biases (EVA's `q_bias`/`v_bias` too), saves it with a `pretrained_cfg` (the timm image
processor reads its transform from the model's config.json) and loads model and processor back with the Auto
classes, as a user would. Needs timm (and so torchvision): import it after `pytest.importorskip("timm")`.
"""

from __future__ import annotations

from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    TimmWrapperModel,
)

from tiny_models import IMAGE_SIZE, LABELS, NUM_LAYERS, PATCH_SIZE, Tiny, _build, _new_dir

__all__ = ["TIMM_MODELS", "make_timm"]

NUM_REGISTERS = 2
#: The timm transform the processor applies: a 48 px resize and center crop, normalized to [-1, 1].
PRETRAINED_CFG = {
    "input_size": [3, IMAGE_SIZE, IMAGE_SIZE],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "crop_pct": 1.0,
    "crop_mode": "center",
    "interpolation": "bicubic",
}
_VIT = dict(img_size=IMAGE_SIZE, patch_size=PATCH_SIZE, embed_dim=32, depth=NUM_LAYERS, num_heads=4, mlp_ratio=2.0)
_EVA = dict(_VIT, use_rot_pos_emb=True, ref_feat_shape=(6, 6))

#: name -> (wrapper class, timm architecture, timm.create_model kwargs)
TIMM_MODELS = {
    # CLS token, token pool, final norm: `head(norm(mean Z))`.
    "vit": (TimmWrapperForImageClassification, "vit_tiny_patch16_224", _VIT),
    # CLS + 2 registers, average pool with fc_norm (norm is an Identity), any size that is a multiple of 8.
    "vit_registers": (
        TimmWrapperForImageClassification,
        "vit_tiny_patch16_224",
        dict(_VIT, reg_tokens=NUM_REGISTERS, global_pool="avg", dynamic_img_size=True),
    ),
    # CLS + attention-pooling head: the pool leaves CLS out (`pool_include_prefix=False`).
    "vit_map": (TimmWrapperForImageClassification, "vit_tiny_patch16_224", dict(_VIT, global_pool="map")),
    # DeiT 3: no position embedding on CLS, layer scale, qk_norm and the context normalized (`attn.norm`).
    "deit3": (
        TimmWrapperForImageClassification,
        "deit3_small_patch16_224",
        dict(_VIT, init_values=0.5, scale_attn_norm=True, qk_norm=True),
    ),
    # DeiT distilled: CLS + distillation token, two heads averaged.
    "deit_distilled": (TimmWrapperForImageClassification, "deit_tiny_distilled_patch16_224", _VIT),
    # EVA-02: RoPE, SwiGLU with its norm, fused qkv with separate q/v biases (the qkv module never runs).
    "eva": (
        TimmWrapperForImageClassification,
        "eva02_tiny_patch14_224",
        dict(_EVA, swiglu_mlp=True, scale_mlp=True, dynamic_img_size=True),
    ),
    # EVA with timm's AttentionRope: separate q/k/v, 2 K/V heads for 4 query heads, qk_norm.
    "eva_gqa": (
        TimmWrapperForImageClassification,
        "eva02_tiny_patch14_224",
        dict(_EVA, attn_type="rope", qkv_fused=False, num_kv_heads=2, qk_norm=True),
    ),
    # timm SigLIP: no CLS, attention-pooling head, as a backbone (no classifier).
    "siglip": (
        TimmWrapperModel,
        "vit_base_patch16_siglip_224",
        dict(_VIT, class_token=False, global_pool="map"),
    ),
    # A ViT backbone with CLS: the pooled feature is the normalized CLS token.
    "vit_backbone": (TimmWrapperModel, "vit_tiny_patch16_224", _VIT),
}


def make_timm(name: str, seed: int = 0) -> Tiny:
    """The tiny timm model `name` (a TIMM_MODELS key) and its timm image processor, loaded back from a folder."""
    wrapper, architecture, model_args = TIMM_MODELS[name]
    labels = {} if wrapper is TimmWrapperModel else {"num_labels": len(LABELS), "id2label": dict(enumerate(LABELS))}
    config = TimmWrapperConfig(
        architecture=architecture, model_args=dict(model_args), pretrained_cfg=PRETRAINED_CFG, **labels
    )
    model = _build(wrapper, config, seed)
    path = _new_dir(f"timm-{name}")
    model.save_pretrained(path)
    auto = AutoModel if wrapper is TimmWrapperModel else AutoModelForImageClassification
    loaded = auto.from_pretrained(path, local_files_only=True).eval()
    if type(loaded) is not wrapper:
        raise RuntimeError(f"{name}: {auto.__name__} loaded {type(loaded).__name__}, not {wrapper.__name__}")
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return Tiny(model=loaded, processor=processor, path=path)
