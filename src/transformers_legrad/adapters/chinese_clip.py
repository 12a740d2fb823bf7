"""Chinese CLIP: `ChineseCLIPModel`.

Chinese CLIP keeps CLIP's vision tower, module for module (`vision_model.encoder.layers`, `self_attn.v_proj` /
`out_proj`, `post_layernorm`, `visual_projection`, one CLS token), so its adapter is `CLIPAdapter` with its own
classes and card; the readout is CLIP's. Its text tower is a BERT (RoBERTa-wwm) encoder that takes
`token_type_ids` and is pooled at its first ([CLS]) token by `get_text_features`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .base import HubCheckpoint, TextInputs, TextLayout, execution_device
from .clip import CLIPAdapter, clip_layout_card
from .registry import register


@register
class ChineseCLIPAdapter(CLIPAdapter):
    spec = replace(
        CLIPAdapter.spec,
        name="chinese_clip",
        display_name="Chinese CLIP",
        model_classes=("ChineseCLIPModel",),
        model_types=("chinese_clip",),
        pipeline_classes=("ChineseCLIPModel",),
        default_class="ChineseCLIPModel",
        **clip_layout_card("Chinese CLIP", "BERT, pooled at its [CLS] token", crops=False),
        # License: the Hub repo carries no license tag; "mit" is the license of the OFA-Sys/Chinese-CLIP release it
        # comes from. Parameter counts: the model built on the meta device with the checkpoint's architecture
        # (ViT-B/16 at 224 px; BERT base with a 21,128-token vocabulary; 512-d projection), rounded; they equal the
        # release's published 188M / 86M.
        checkpoints=(
            HubCheckpoint(
                model_id="OFA-Sys/chinese-clip-vit-base-patch16",
                license="mit",
                native_resolution=224,
                patch_size=16,
                parameters_millions=188,
                image_tower_parameters_millions=86,
                image_size=448,
            ),
        ),
    )

    # BERT attends both ways; padding keys are masked.
    text_layout = TextLayout(
        blocks="text_model.encoder.layer", value="attention.self.value", output="attention.output.dense", causal=False
    )

    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: Chinese CLIP pools its first ([CLS]) token."""
        return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)

    def text_readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """Chinese CLIP's text embedding [prompts, dim] from one text layer's pooled token [prompts, hidden]:
        `text_projection` (not normalized), as `get_text_features` (BERT's layers end with their own norm)."""
        return self.model.text_projection(pooled)

    def text_features(self, text: TextInputs) -> torch.Tensor:
        """Prompt embeddings [prompts, dim]: `get_text_features` with the tokenizer's `token_type_ids` (all zeros
        when the inputs carry none: one segment, as the BERT tokenizer gives a single sentence)."""
        device = execution_device(self.model.text_model, self.model)
        input_ids = text.input_ids.to(device)
        token_type_ids = text.extra.get("token_type_ids")
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids.to(device)
        attention_mask = None if text.attention_mask is None else text.attention_mask.to(device)
        output = self.model.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return output.pooler_output
