"""CLIP: `CLIPModel` and `CLIPVisionModelWithProjection`.

LeGrad's per-layer readout for CLIP follows the authors' code: the mean over ALL tokens of a block's output (CLS
included), then `post_layernorm`, `visual_projection` and L2 normalization. `score="model"` uses the CLS token,
as CLIP itself pools.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ZERO_SHOT, DualEncoderAdapter, FamilySpec, HubCheckpoint, PixelInputs, TextLayout
from .registry import register

CLIP_VISION_LAYOUT = {
    "vision_config": "vision_model.config",
    "blocks": "vision_model.encoder.layers",
    "attention": "self_attn",
    "value": "self_attn.v_proj",
    "output": "self_attn.out_proj",
    "mlp_output": "mlp.fc2",
}
#: CLIP's text tower (MetaCLIP 2's too): causal self-attention in `text_model.encoder.layers`.
CLIP_TEXT_LAYOUT = TextLayout(
    blocks="text_model.encoder.layers", value="self_attn.v_proj", output="self_attn.out_proj", causal=True
)


@register
class CLIPAdapter(DualEncoderAdapter):
    spec = FamilySpec(
        name="clip",
        display_name="CLIP",
        model_classes=("CLIPModel", "CLIPVisionModelWithProjection"),
        base_task=ZERO_SHOT,
        model_types=("clip",),
        pipeline_classes=("CLIPModel",),  # the vision tower with projection has no text tower: no pipeline
        default_class="CLIPModel",
        **CLIP_VISION_LAYOUT,
        score_definition=(
            "A prompt's score at block l is CLIP's image-text cosine computed from that block's output tokens: "
            "`s^l = <t, normalize(visual_projection(post_layernorm(mean of all tokens)))>`, where `t` is the "
            "prompt's normalized text embedding (mean pooling over all tokens, CLS included, as in the authors' "
            "code)."
        ),
        reading_notes=(
            "- **Center crop.** CLIP's processor resizes the short side of the image and center-crops a square. On "
            "a non-square image the model never sees the cropped-away sides: the pipeline's `heatmap` and `overlay` "
            "are blank (zero) there, which means *not looked at*, not *no evidence*. Pad the image to a square "
            "first if the whole picture matters.",
            "- **Scores.** The pipeline's `score` is the softmax over the labels you pass, as in "
            "`zero-shot-image-classification`: it changes with the other labels. `LeGradExplainer` returns CLIP's "
            "`logits_per_image` in `out.scores`.",
        ),
        # Licenses: each Hub repo's license tag; the openai/* repos carry none, and "mit" is the license of the
        # openai/CLIP release they come from. Parameter counts: models built on the meta device with each
        # checkpoint's published architecture hyperparameters, rounded.
        checkpoints=(
            HubCheckpoint(
                model_id="openai/clip-vit-base-patch16",
                license="mit",
                native_resolution=224,
                patch_size=16,
                parameters_millions=150,
                image_tower_parameters_millions=86,
                image_size=448,
            ),
            HubCheckpoint(
                model_id="openai/clip-vit-large-patch14",
                license="mit",
                native_resolution=224,
                patch_size=14,
                parameters_millions=428,
                image_tower_parameters_millions=304,
                image_size=448,
            ),
            HubCheckpoint(
                model_id="laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
                license="mit",
                native_resolution=224,
                patch_size=14,
                parameters_millions=2_540,
                image_tower_parameters_millions=1_845,
                image_size=448,
                dtype="bfloat16",
            ),
        ),
    )

    text_layout = CLIP_TEXT_LAYOUT

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad"

    @property
    def embedding_dim(self) -> int:
        return int(self.model.visual_projection.out_features)

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        vision = self.model.vision_model(**pixels.model_kwargs)
        return F.normalize(self.model.visual_projection(vision.pooler_output).float(), dim=-1)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        pooled = tokens[:, 0] if score == "model" else tokens.mean(dim=1)
        pooled = self.model.vision_model.post_layernorm(pooled)
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    # --- the text side (`text_side.py`) ----------------------------------------------------------------------
    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: the position CLIP's text model pools, its end-of-text token: the largest id when the
        config's `eos_token_id` is the old 2, else the first `eos_token_id` (as `CLIPTextModel.forward`)."""
        eos = self.model.text_model.eos_token_id
        if eos == 2:
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids.to(torch.int) == eos).int().argmax(dim=-1)

    def text_readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """CLIP's text embedding [prompts, dim] from one text layer's pooled token [prompts, hidden]:
        `final_layer_norm` -> `text_projection` (not normalized)."""
        return self.model.text_projection(self.model.text_model.final_layer_norm(pooled))


# --- the card prose of other dual encoders with CLIP's vision side (MetaCLIP 2, AltCLIP, Chinese CLIP) ------------
_LAYOUT_SCORE = (
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
        "score_definition": _LAYOUT_SCORE.format(name=name, text=text),
        "reading_notes": (geometry.format(name=name), _SCORES_NOTE.format(name=name)),
    }
