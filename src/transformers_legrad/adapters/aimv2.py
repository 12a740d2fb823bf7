"""AIMv2: `Aimv2Model` (image-text dual encoder) and `Aimv2VisionModel` (backbone, with or without its head).

AIMv2's vision tower has no CLS token, pre-norm blocks with RMSNorm (`rms_norm1`/`rms_norm2`), a SwiGLU MLP whose
output projection is `ffn.down_proj`, a final `rms_norm`, and an attention-pooling head
(`Aimv2AttentionPoolingHead`): one learned query (`cls_token`, used as it is: there is no query projection)
attends over `k_proj`/`v_proj` of the tokens with SDPA, then `output_proj`. The model feeds that head the trunk's
output AFTER the final RMSNorm (`Aimv2VisionModel.forward`: `head(rms_norm(last block output))`), and
`Aimv2Model.get_image_features` is `visual_projection` of the head's output.

Readouts (DESIGN.md section 7), with the gradient taken w.r.t. the pooling head's attention probabilities, as for
SigLIP (the head's attention is recomputed here so its context is a differentiable `AttentionHandle`):

- `Aimv2Model`: `s^l_k = <t_k, normalize(visual_projection(head(rms_norm(Z^l))))>`.
- `Aimv2VisionModel` with its head: `normalize(head(rms_norm(Z^l)))`; without (`use_head=False`): each block's
  self-attention is explained through `normalize(rms_norm(mean Z^l))` (the backbone readout), and the model's own
  pooling (`score="model"`, reference images) is the mean of its normalized output tokens.

Why the head reads `rms_norm(Z^l)` and not the raw block output (SigLIP's legrad readout takes the raw output
because the authors' code does; there is no authors' code for AIMv2): the model never applies its head to
anything else, and the head has no norm of its own, so its keys `k_proj(Z)` scale with the tokens. The residual
stream of a pre-norm trunk grows with depth, so on raw tokens each block's head softmax would run at a different,
untrained temperature; after the RMSNorm every block's tokens are on the scale the head was trained on, and the
last block's score is exactly the model's own. So with a head, `score="legrad"` and `score="model"` are the same
readout.

Inputs: checkpoints with learned position embeddings (`is_native=False`, such as the 224-pixel ones) take only their
`image_size` (transformers does not interpolate them); native-resolution ones (`is_native=True`: 2D sine-cosine
position embeddings built per input) take any size and aspect ratio.

Text side (`text_relevance=True`): the text tower is CLIP-like (learned positions, causal self-attention in
`text_model.encoder.layers`, `attention.v_proj`/`out_proj`), pooled at the first end-of-text token after its final
`rms_norm`, then `text_projection`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONE_NOTES, BACKBONE_SCORE, OptionalHeadBackboneAdapter
from .base import (
    FEATURE_EXTRACTION,
    ZERO_SHOT,
    AttentionHandle,
    DualEncoderAdapter,
    FamilyAdapter,
    FamilySpec,
    HubCheckpoint,
    PixelInputs,
    TextInputs,
    TextLayout,
    execution_device,
)
from .clip import clip_layout_card
from .registry import register
from .siglip import pooling_head_context

#: Where an AIMv2 vision block keeps what the engine hooks (paths from one block), and its (absent) prefix tokens.
AIMV2_BLOCK_LAYOUT = {
    "attention": "attention",
    "value": "attention.v_proj",
    "output": "attention.out_proj",
    "mlp_output": "ffn.down_proj",
    "prefix_tokens": 0,
    # The config's `image_size` is no size to scale from: learned position embeddings take only it, native-resolution
    # ones any size; cards therefore suggest no other size (`_card_model_from_config`).
    "native_resolution": False,
}
_FIXED_SIZE_NOTE = (
    "- **Fixed resolution.** This checkpoint's position embeddings are learned for 224 x 224 inputs and AIMv2 does "
    "not interpolate them, so it is explained at 224 x 224 (the processor's size); `image_size=` other sizes is "
    "refused. Native-resolution AIMv2 checkpoints (`is_native=True`) take any size."
)

_CAUSAL_TEXT_NOTE = (
    "- **Scores and the text tower.** Prompts are embedded by AIMv2's text tower run causally, as it was trained. "
    "Under SDPA attention (transformers' default), the model's own forward runs prompts that no padding reaches "
    "(a single prompt, or prompts of one length) bidirectionally, because transformers drops the all-ones mask its "
    "causal mask is built from: its `logits_per_image` can then differ from `out.scores`. Load the model with "
    '`attn_implementation="eager"` for the model\'s intended, causal result, which `out.scores` equals.'
)


class _Aimv2Vision:
    """What both AIMv2 adapters share: the input sizes their position embeddings allow, and the head's readout."""

    @property
    def vision_tower(self) -> nn.Module:
        """The `Aimv2VisionModel` (the model itself, or a dual encoder's `vision_model`)."""
        raise NotImplementedError

    @property
    def native_image_size(self) -> tuple[int, int] | None:
        return None  # the model takes no `interpolate_pos_encoding`: sizes are checked in `prepare_pixels`

    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        pixels = super().prepare_pixels(pixel_values, **extra)
        config = self.vision_tower.config
        size = (int(config.image_size), int(config.image_size))
        if not config.is_native and tuple(pixel_values.shape[-2:]) != size:
            height, width = pixel_values.shape[-2:]
            raise ValueError(
                f"this {type(self.model).__name__} has position embeddings learned for {size[0]}x{size[1]} inputs "
                f"(`image_size`, `is_native=False`), which AIMv2 does not interpolate, so it cannot take "
                f"`pixel_values` of {height}x{width}. Explain at {size[0]}x{size[1]} (the processor's own size: "
                "drop `image_size=`), or use a native-resolution AIMv2 checkpoint (`is_native=True`), which takes any "
                "size."
            )
        return pixels

    def head_readout(self, tokens: torch.Tensor) -> tuple[torch.Tensor, AttentionHandle]:
        """(head output [batch, hidden], handle on its attention) of one block's output tokens after `rms_norm`."""
        tower = self.vision_tower
        return attention_pooling_head_readout(tower.head, tower.rms_norm(tokens))


@register
class Aimv2Adapter(_Aimv2Vision, DualEncoderAdapter):
    spec = FamilySpec(
        name="aimv2",
        display_name="AIMv2",
        model_classes=("Aimv2Model",),
        base_task=ZERO_SHOT,
        auto_model="AutoModel",  # transformers maps aimv2 to no zero-shot Auto class
        model_types=("aimv2",),
        default_class="Aimv2Model",
        vision_config="vision_model.config",
        blocks="vision_model.encoder.layers",
        **AIMV2_BLOCK_LAYOUT,
        score_definition=(
            "A prompt's score at block l is AIMv2's image-text cosine computed by the model's attention-pooling head "
            "applied to that block's output tokens after the trunk's final RMSNorm: "
            "`s^l = <t, normalize(visual_projection(head(rms_norm(Z^l))))>`, where `t` is the prompt's normalized "
            "text embedding; the gradient is taken with respect to the pooling head's attention probabilities (its "
            "learned query over the patch tokens), recomputed for each block."
        ),
        reading_notes=(
            *clip_layout_card("AIMv2", "", crops=False)["reading_notes"],
            _FIXED_SIZE_NOTE,
            _CAUSAL_TEXT_NOTE,
        ),
        # License: Apple's own sample-code license, which is no Hub license identifier ("other"). Parameter counts:
        # the model built on the meta device from `Aimv2Config()`, whose defaults transformers documents as this
        # checkpoint's architecture (ViT-L/14 vision tower, 24 blocks of width 1024; 12-layer text tower), rounded;
        # the image tower includes `visual_projection`.
        checkpoints=(
            HubCheckpoint(
                model_id="apple/aimv2-large-patch14-224-lit",
                license="other",
                native_resolution=224,
                patch_size=14,
                parameters_millions=436,
                image_tower_parameters_millions=313,
                image_size=224,
                image_size_note="its learned position embeddings are not interpolated",
            ),
        ),
    )
    explains_pooling_head = True
    # Causal: `Aimv2TextModel` builds a causal mask from the attention mask (`text_features` always passes one).
    text_layout = TextLayout(
        blocks="text_model.encoder.layers", value="attention.v_proj", output="attention.out_proj", causal=True
    )

    def check_structure(self) -> None:
        super().check_structure()
        if getattr(self.model.vision_model, "head", None) is None:
            raise TypeError(
                f"This {type(self.model).__name__} has no attention-pooling head (`vision_config.use_head=False`), "
                "so it computes no image embedding to compare prompts with; explain its vision tower as an "
                "`Aimv2VisionModel` along `directions=` instead."
            )

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def embedding_dim(self) -> int:
        return int(self.model.visual_projection.out_features)

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        vision = self.model.vision_model(**pixels.model_kwargs)
        return F.normalize(self.model.visual_projection(vision.pooler_output).float(), dim=-1)

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        pooled, handle = self.head_readout(tokens)  # the same readout for both scores (module docstring)
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1), handle

    def final_scores(self, image_features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """`logits_per_image`: the cosine times AIMv2's temperature, clamped as its forward clamps it."""
        cosine = FamilyAdapter.final_scores(self, image_features, directions)
        scale = self.model.logit_scale.detach().float().clamp(0.0, self.model.max_log_logit_scale).exp()
        return cosine * scale.to(cosine.device)

    # --- the text side (`text_side.py`) ----------------------------------------------------------------------
    def text_features(self, text: TextInputs) -> torch.Tensor:
        """Prompt embeddings [prompts, dim] of the causal text tower, under eager and SDPA attention alike.

        `Aimv2TextModel` is causal only through the mask it builds from `attention_mask` (its attention says
        `is_causal=False`): without a mask, or under SDPA when no prompt is padded (transformers then drops the
        all-ones mask), its tokens would attend both ways. A prepared 4D additive mask (causal and padding) is used
        as it is, so the tower runs as the causal encoder it was trained as, and as `text_layout` declares it.
        """
        if self.model.text_model.config._attn_implementation not in ("eager", "sdpa"):
            return super().text_features(text)  # flash/flex kernels take no 4D mask
        device = execution_device(self.model.text_model, self.model)
        input_ids = text.input_ids.to(device)
        length = input_ids.shape[1]
        real = torch.ones_like(input_ids, dtype=torch.bool) if text.attention_mask is None else text.attention_mask
        allowed = real.to(device).bool()[:, None, None, :] & torch.ones(length, length, device=device).tril().bool()
        dtype = self.model.text_projection.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
        return self.model.get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output

    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: the first `eos_token_id` position, as `Aimv2TextModel` pools."""
        return (input_ids.to(torch.int) == self.model.text_model.eos_token_id).int().argmax(dim=-1)

    def text_readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """AIMv2's text embedding [prompts, dim] from one text layer's pooled token [prompts, hidden]: the text
        tower's final `rms_norm` -> `text_projection` (not normalized)."""
        return self.model.text_projection(self.model.text_model.rms_norm(pooled))


@register
class Aimv2VisionAdapter(_Aimv2Vision, OptionalHeadBackboneAdapter):
    """`Aimv2VisionModel`, with its attention-pooling head (explained through the head's attention, as
    `Aimv2Adapter`) or without (`use_head=False`: `rms_norm` of the mean token)."""

    spec = FamilySpec(
        name="aimv2_vision",
        display_name="AIMv2 vision tower",
        model_classes=("Aimv2VisionModel",),
        base_task=FEATURE_EXTRACTION,
        model_types=("aimv2_vision_model",),
        default_class="Aimv2VisionModel",
        blocks="encoder.layers",
        **AIMV2_BLOCK_LAYOUT,
        score_definition=BACKBONE_SCORE
        + (
            " With its attention-pooling head (`use_head=True`, the default) the readout is that head applied to the "
            "block's output tokens after the trunk's final RMSNorm, `normalize(head(rms_norm(Z^l)))`, and the "
            "gradient is taken with respect to the head's attention probabilities."
        ),
        reading_notes=BACKBONE_NOTES,
    )
    final_norm = "rms_norm"

    @property
    def vision_tower(self) -> nn.Module:
        return self.model

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        pooled, handle = self.head_readout(tokens)
        return F.normalize(pooled.float(), dim=-1), handle


# --- the attention-pooling head, written out ---------------------------------------------------------------------
# The head calls SDPA, which exposes no probabilities; LeGrad needs its context (probabilities @ values) as a leaf.
def attention_pooling_head_readout(head: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, AttentionHandle]:
    """(head output [batch, hidden], handle on the head's attention) for tokens [batch, tokens, hidden]."""
    with torch.no_grad():
        probabilities, values = attention_pooling_head_probabilities(head, tokens)
        context = pooling_head_context(probabilities, values)
    context.requires_grad_(True)
    return head.output_proj(context)[:, 0], AttentionHandle(context=context, values=values, num_heads=head.num_heads)


def attention_pooling_head_probabilities(head: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`Aimv2AttentionPoolingHead`'s query (its `cls_token`, split into heads) attending over `tokens`.

    Returns:
        (probabilities [batch, heads, 1, tokens], values [batch, tokens, hidden]).
    """
    batch, num_tokens, hidden = tokens.shape
    num_heads = head.num_heads
    head_dim = hidden // num_heads
    query = head.cls_token.reshape(1, 1, num_heads, head_dim).transpose(1, 2)  # [1, heads, 1, head_dim]
    keys = head.k_proj(tokens).view(batch, num_tokens, num_heads, head_dim).permute(0, 2, 3, 1)
    logits = (query @ keys) * head_dim**-0.5  # SDPA's default scale
    return logits.softmax(dim=-1), head.v_proj(tokens)
