"""AltCLIP: `AltCLIPModel`.

AltCLIP keeps CLIP's vision tower, module for module (`vision_model.encoder.layers`, `self_attn.v_proj` /
`out_proj`, `post_layernorm`, `visual_projection`, one CLS token), so its adapter is `CLIPAdapter` with its own
classes and card; the readout is CLIP's. Its text tower is an XLM-R encoder (`AltRobertaModel`, then `pre_LN`,
`transformation` and `text_projection` on the first token), which prompts reach through the model's own
`get_text_features`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .base import HubCheckpoint, TextLayout
from .clip import CLIPAdapter, clip_layout_card
from .registry import register


@register
class AltCLIPAdapter(CLIPAdapter):
    spec = replace(
        CLIPAdapter.spec,
        name="altclip",
        display_name="AltCLIP",
        model_classes=("AltCLIPModel",),
        model_types=("altclip",),
        pipeline_classes=("AltCLIPModel",),
        default_class="AltCLIPModel",
        **clip_layout_card("AltCLIP", "XLM-R, pooled at its first token"),
        # License: the Hub repo's license tag. Parameter counts: the model built on the meta device with the
        # checkpoint's architecture (ViT-L/14 at 224 px; XLM-R large text tower; 768-d projection), rounded; the
        # image tower includes `visual_projection`.
        checkpoints=(
            HubCheckpoint(
                model_id="BAAI/AltCLIP",
                license="creativeml-openrail-m",
                native_resolution=224,
                patch_size=14,
                parameters_millions=864,
                image_tower_parameters_millions=304,
                image_size=448,
            ),
        ),
    )

    # XLM-R attends both ways; padding keys are masked.
    text_layout = TextLayout(
        blocks="text_model.roberta.encoder.layers",
        value="attention.self.value",
        output="attention.output.dense",
        causal=False,
    )

    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: AltCLIP pools its first token (`<s>`)."""
        return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)

    def text_readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """AltCLIP's text embedding [prompts, dim] from one text layer's pooled token [prompts, hidden]: `pre_LN`
        -> `transformation` -> `text_projection` (not normalized), as `get_text_features`."""
        text_model = self.model.text_model
        return self.model.text_projection(text_model.transformation(text_model.pre_LN(pooled)))

    def max_text_length(self, tokenizer) -> int:
        """XLM-R numbers positions from `pad_token_id + 1`: the text tower takes that many fewer tokens than it
        has position embeddings (512 of 514)."""
        config = self.model.config.text_config
        tower = int(config.max_position_embeddings) - int(config.pad_token_id) - 1
        return min(tower, int(getattr(tokenizer, "model_max_length", tower) or tower))
