"""BLIP image-text retrieval: `BlipForImageTextRetrieval`, through its matching head (ITM) or its cosine (ITC).

BLIP's vision blocks compute Q, K and V with one fused projection (`self_attn.qkv`, V its last third, heads
concatenated as the model splits it) and take the attention context into `self_attn.projection`. The model scores
an image-text pair in one of two ways (`forward(use_itm_head=...)`), and the adapter explains the one it is built
with (`LeGradExplainer(model, processor, use_itm_head=...)`, default True as in the model's `forward`):

- ITM (`use_itm_head=True`): the text encoder cross-attends every token of the last block after `post_layernorm`,
  and `itm_head` turns its first token into two logits, (no match, match). Block l's score for prompt k is the same
  recipe on block l's tokens: `s^l_k = itm_head(text_encoder(prompt k, encoder_hidden_states=post_layernorm(Z^l))
  [:, 0])[1]`, the match logit. The readout of a block is every prompt's pair of logits, [batch, 2 * prompts], and a
  prompt's direction the one-hot row of its match logit, so the prompts reach the readout (`reads_prompts`). The
  model's own readout is this one (it pools nothing), so `score="model"` gives the same maps.
- ITC (`use_itm_head=False`): explained like CLIP, `s^l_k = <t_k, normalize(vision_proj(post_layernorm(mean of all
  tokens of Z^l))))>` with `t_k = normalize(text_proj(text_encoder(prompt k)[:, 0]))`; `score="model"` pools the
  CLS token, as the model does. The model's score is the cosine itself (it has no temperature).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .base import ZERO_SHOT, DualEncoderAdapter, FamilySpec, HubCheckpoint, PixelInputs, TextInputs, execution_device
from .registry import register

#: The index of the "match" logit of BLIP's `itm_head` ((no match, match), as BLIP's retrieval code reads it).
MATCH = 1


@register
class BlipRetrievalAdapter(DualEncoderAdapter):
    spec = FamilySpec(
        name="blip",
        display_name="BLIP",
        model_classes=("BlipForImageTextRetrieval",),
        base_task=ZERO_SHOT,
        model_types=("blip",),
        default_class="BlipForImageTextRetrieval",
        vision_config="vision_model.config",
        blocks="vision_model.encoder.layers",
        attention="self_attn",
        value="self_attn.qkv",
        output="self_attn.projection",
        fused_qkv=True,
        mlp_output="mlp.fc2",
        score_definition=(
            "A prompt's score at block l is BLIP's image-text matching logit computed from that block's output "
            "tokens: `s^l = itm_head(text_encoder(prompt, encoder_hidden_states=post_layernorm(tokens))[:, 0])[1]`, "
            "the text encoder cross-attending every token of block l as the model does with its last block "
            "(`use_itm_head=True`, the model's default). With `LeGradExplainer(model, processor, "
            "use_itm_head=False)` it is BLIP's image-text cosine instead, explained like CLIP's: `s^l = <t, "
            "normalize(vision_proj(post_layernorm(mean of all tokens)))>`, where `t` is the prompt's normalized "
            "`text_proj` embedding."
        ),
        scores_name="the match logit (with `use_itm_head=False`: the cosine)",
        reading_notes=(
            "- **Processor geometry.** BLIP's processor resizes the image to a square without cropping: a non-square "
            "image is squeezed for the model and its maps are stretched back to the original shape.",
            "- **Scores.** With the matching head (the default) each prompt is scored on its own: `out.scores` holds "
            "the match logit, and the pipeline's `score` the match probability of the head's two-way softmax, as "
            "`itm_score.softmax(dim=1)[:, 1]`; prompts do not compete. With `use_itm_head=False`, `out.scores` is "
            "the cosine (BLIP's retrieval model has no temperature) and `score` its softmax over the labels you "
            "pass, close to uniform for few labels: compare the cosines.",
            "- **Cost.** The matching head runs the text encoder once per explained block, image and prompt; the "
            "cosine (`use_itm_head=False`) needs one text embedding per prompt.",
        ),
        # License: the Hub repo's license tag. Parameters: the model built on the meta device with the checkpoint's
        # architecture (ViT-B/16 at 384 px; BERT base text encoder with cross-attention), rounded.
        checkpoints=(
            HubCheckpoint(
                model_id="Salesforce/blip-itm-base-coco",
                license="bsd-3-clause",
                native_resolution=384,
                patch_size=16,
                parameters_millions=224,
                image_tower_parameters_millions=86,
                image_size=384,
                image_size_note="BLIP was fine-tuned at 384 x 384 pixels, already a fine 24 x 24 patch grid",
            ),
        ),
    )

    def __init__(self, model: torch.nn.Module, *, use_itm_head: bool = True, **options: object) -> None:
        if not isinstance(use_itm_head, bool):
            raise TypeError(f"`use_itm_head` must be True (matching head) or False (cosine), got {use_itm_head!r}.")
        self.use_itm_head = use_itm_head
        super().__init__(model, **options)  # any other option is unknown: the base says so

    @property
    def reads_prompts(self) -> bool:
        return self.use_itm_head

    def readout_is_token_mean(self, score: str) -> bool:
        return not self.use_itm_head and score == "legrad"

    @property
    def has_text_tower(self) -> bool:
        return True

    @property
    def embedding_dim(self) -> int:
        return int(self.model.vision_proj.out_features)

    # --- readouts ----------------------------------------------------------------------------------------------
    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        """ITM: [batch, 2 * prompts], each prompt's (no match, match) logits; ITC: the normalized image embedding."""
        image_embeds = self.model.vision_model(**pixels.model_kwargs).last_hidden_state  # after post_layernorm
        if self.use_itm_head:
            return self._matching_logits(image_embeds, pixels.prompts).float()
        return F.normalize(self.model.vision_proj(image_embeds[:, 0]).float(), dim=-1)

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        post_layernorm = self.model.vision_model.post_layernorm
        if self.use_itm_head:  # the model reads every token: "legrad" and "model" are the same readout
            return self._matching_logits(post_layernorm(tokens), pixels.prompts)
        pooled = tokens[:, 0] if score == "model" else tokens.mean(dim=1)
        return F.normalize(self.model.vision_proj(post_layernorm(pooled)).float(), dim=-1)

    def _matching_logits(self, image_embeds: torch.Tensor, prompts: TextInputs | None) -> torch.Tensor:
        """[batch, 2 * prompts]: `itm_head` on the text encoder's first token for every (image, prompt) pair, the
        text encoder cross-attending all of `image_embeds` [batch, tokens, hidden], as the model's forward does."""
        if prompts is None:
            raise ValueError(
                "BLIP's matching head reads the prompts' tokens: pass `text=[...]` with a processor (or build the "
                "explainer with `use_itm_head=False` to explain the cosine with `text_embeds`)."
            )
        batch, num_prompts = image_embeds.shape[0], prompts.input_ids.shape[0]
        device = image_embeds.device
        input_ids = prompts.input_ids.to(device).repeat(batch, 1)  # pair (b, k) at row b * prompts + k
        mask = None if prompts.attention_mask is None else prompts.attention_mask.to(device).repeat(batch, 1)
        images = image_embeds.repeat_interleave(num_prompts, dim=0)
        text = self.model.text_encoder(
            input_ids=input_ids,
            attention_mask=mask,
            encoder_hidden_states=images,
            encoder_attention_mask=torch.ones(images.shape[:-1], dtype=torch.long, device=device),
        ).last_hidden_state
        return self.model.itm_head(text[:, 0]).reshape(batch, 2 * num_prompts)

    # --- prompts and scores ------------------------------------------------------------------------------------
    def prompt_directions(self, num_prompts: int) -> torch.Tensor:
        """float32 [prompts, 2 * prompts]: prompt k's direction picks its match logit, column 2k + 1."""
        return F.one_hot(torch.arange(num_prompts) * 2 + MATCH, 2 * num_prompts).float()

    def prompt_chunk(self, pixels: PixelInputs, start: int, stop: int) -> tuple[PixelInputs, slice]:
        """Prompts `start:stop` of `pixels.prompts`, and their logits' columns `2 * start:2 * stop`."""
        prompts = pixels.prompts
        if prompts is None:  # the readout says what is missing
            return pixels, slice(2 * start, 2 * stop)
        rows = TextInputs(
            input_ids=prompts.input_ids[start:stop],
            attention_mask=None if prompts.attention_mask is None else prompts.attention_mask[start:stop],
            extra={name: value[start:stop] for name, value in prompts.extra.items()},
        )
        return dataclasses.replace(pixels, prompts=rows), slice(2 * start, 2 * stop)

    def text_features(self, text: TextInputs) -> torch.Tensor:
        """ITC prompt embeddings [prompts, dim]: `text_proj` of the text encoder's first token, as the model's
        `forward(use_itm_head=False)` (not normalized)."""
        device = execution_device(self.model.text_encoder, self.model)
        attention_mask = None if text.attention_mask is None else text.attention_mask.to(device)
        hidden = self.model.text_encoder(input_ids=text.input_ids.to(device), attention_mask=attention_mask)
        return self.model.text_proj(hidden.last_hidden_state[:, 0])

    def probabilities(
        self, image_features: torch.Tensor, directions: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """ITM: each prompt's match probability, the softmax of its own two logits; ITC: softmax over prompts."""
        if not self.use_itm_head:
            return super().probabilities(image_features, directions, scores)
        pairs = image_features.float().unflatten(-1, (-1, 2)).softmax(dim=-1).flatten(-2)
        return torch.einsum("bf,bkf->bk", pairs, directions.float())
