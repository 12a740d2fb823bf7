"""MetaCLIP 2: `MetaClip2Model` and `MetaClip2VisionModelWithProjection`.

MetaCLIP 2's vision side is CLIP's, module for module (`vision_model.encoder.layers`, `self_attn.v_proj` /
`out_proj`, `post_layernorm`, `visual_projection`, one CLS token), so its adapter is `CLIPAdapter` with its own
classes and card; the readout is CLIP's. Only the text tower differs (an XLM-V vocabulary, pooled at the first EOS
token, as `get_text_features` does); prompts go through the model's own `get_text_features`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .base import HubCheckpoint
from .clip import CLIPAdapter, clip_layout_card
from .registry import register


@register
class MetaClip2Adapter(CLIPAdapter):
    spec = replace(
        CLIPAdapter.spec,
        name="metaclip_2",
        display_name="MetaCLIP 2",
        model_classes=("MetaClip2Model", "MetaClip2VisionModelWithProjection"),
        model_types=("metaclip_2",),
        pipeline_classes=("MetaClip2Model",),  # the vision tower with projection has no text tower: no pipeline
        default_class="MetaClip2Model",
        **clip_layout_card("MetaCLIP 2", "multilingual, pooled at the first end-of-text token"),
        # License: the MetaCLIP release's (CC-BY-NC 4.0). Parameter counts: the model built on the meta device with
        # the checkpoint's architecture (ViT-H/14 at 224 px; text tower 1024 wide, 24 layers, XLM-V's 901,629-token
        # vocabulary, 77 positions; 1024-d projection), rounded; the image tower includes `visual_projection`.
        checkpoints=(
            HubCheckpoint(
                model_id="facebook/metaclip-2-worldwide-huge-quickgelu",
                license="cc-by-nc-4.0",
                native_resolution=224,
                patch_size=14,
                parameters_millions=1_860,
                image_tower_parameters_millions=632,
                image_size=448,
                dtype="bfloat16",
            ),
        ),
    )

    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: MetaCLIP 2 pools the first `eos_token_id` position, whatever that id is."""
        return (input_ids.to(torch.int) == self.model.text_model.eos_token_id).int().argmax(dim=-1)
