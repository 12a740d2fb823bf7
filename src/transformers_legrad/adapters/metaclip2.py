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
from .clip import CLIPAdapter
from .registry import register

_SCORE = (
    "A prompt's score at block l is {name}'s image-text cosine computed from that block's output tokens: "
    "`s^l = <t, normalize(visual_projection(post_layernorm(mean of all tokens)))>`, where `t` is the prompt's "
    "normalized text embedding from {name}'s own text tower ({text}); mean pooling over all tokens, CLS included, as "
    "in the authors' code."
)
_CROP_NOTE = (
    "- **Center crop.** {name}'s processor resizes the short side of the image and crops its central square. On a "
    "non-square image the model never sees the cropped-away sides: the pipeline's `heatmap` and `overlay` are blank "
    "(zero) there, which means *not looked at*, not *no evidence*. Pad the image to a square first if the whole "
    "picture matters."
)
_GEOMETRY_NOTE = (
    "- **Processor geometry.** The maps cover what {name}'s processor shows the model: where it center-crops, the "
    "cropped-away sides are blank (zero) in the pipeline's `heatmap` and `overlay` (*not looked at*, not *no "
    "evidence*); where it resizes to a square without cropping, a non-square image is squeezed for the model and "
    "its maps are stretched back to the original shape."
)
_SCORES_NOTE = (
    "- **Scores.** The pipeline's `score` is the softmax over the labels you pass, as in "
    "`zero-shot-image-classification`: it changes with the other labels. `LeGradExplainer` returns {name}'s "
    "`logits_per_image` in `out.scores`."
)


def clip_layout_card(name: str, text: str, *, crops: bool = True) -> dict[str, object]:
    """The card prose (`score_definition`, `reading_notes`) of a dual encoder with CLIP's vision side.

    Args:
        name: the family's display name.
        text: how its text tower pools a prompt, for the score's definition.
        crops: whether its processor center-crops (CLIP's image processor) or may resize to a square.
    """
    geometry = _CROP_NOTE if crops else _GEOMETRY_NOTE
    return {
        "score_definition": _SCORE.format(name=name, text=text),
        "reading_notes": (geometry.format(name=name), _SCORES_NOTE.format(name=name)),
    }


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
