"""`LeGradExplainer`: the user-facing entry point, and `LeGradOutput`, what it returns.

LeGrad (Bousselham et al., arXiv 2404.03214) explains a vision transformer by the sensitivity of each layer's own
score to that layer's attention probabilities:

    E^l = mean over heads and query rows of ReLU(d s^l / d A^l),   grid_map = sum over explained layers l of E^l

restricted to the patch keys and laid out on the patch grid, then upsampled bilinearly and min-max normalized.
This module validates inputs (before any heavy work), runs the processor, and hands the model-ready tensors to the
engine; model-family details live in `adapters/`.
"""

from __future__ import annotations

import operator
import threading
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import detection, engine, maps, text_side
from .adapters import FamilyAdapter, PixelInputs, TextInputs, adapter_for
from .engine import eval_mode, layer_relevance, run_trunk
from .images import load as load_image
from .request import ExplanationRequest
from .videos import as_videos

#: The null prompt of SigLIP's correction, as in the authors' code.
NULL_PROMPT = "a photo of a"
#: Prompts encoded per text-tower forward; many prompts are encoded in chunks so memory stays bounded.
TEXT_BATCH_SIZE = 64

LayerSpec = None | str | int | Iterable[int]

# One lock per model: the engine hooks the model's blocks while it runs, so two explanations of one model from two
# threads would capture each other's activations. They are serialized instead.
_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def _model_lock(model: nn.Module) -> threading.Lock:
    with _MODEL_LOCKS_GUARD:
        return _MODEL_LOCKS.setdefault(model, threading.Lock())


@dataclass
class LeGradOutput:
    """The maps and scores of one `LeGradExplainer.explain` call.

    Attributes:
        heatmaps: float32 [batch, prompts, height, width] in [0, 1] at the processed image size; videos: [batch,
            prompts, frames, height, width], upsampled along the frames too (trilinear); audio: [batch, prompts, mel
            bins, time frames], interpolated between the patch centres (`PixelInputs.patch_geometry`).
        grid_maps: float32 [batch, prompts, h, w], the raw summed layer maps on the patch grid (after the SigLIP
            correction, before any normalization or upsampling); videos: [batch, prompts, t, h, w] on the tubelet
            grid; audio: [batch, prompts, frequency patches, time patches].
        layer_maps: float32 [batch, prompts, layers, *grid] per explained layer when `return_layer_maps=True`.
        labels: the prompts, or the class names of the targets; a list of `prompts` strings, or one such list per
            image when a classifier's default (top-1) targets differ between images.
        scores: float32 [batch, prompts], the model's own final score: `logits_per_image` of a dual encoder (the
            cosine for `CLIPVisionModelWithProjection` and BLIP's `use_itm_head=False`; AIMv2's from its causal text
            tower, see its card), BLIP's match logit (`use_itm_head=True`), the class logit of a classifier, a
            backbone's cosine between its normalized pooled embedding and the direction, a detector's box logit.
        probabilities: float32 [batch, prompts], the scores as the models' own pipelines report them: softmax
            over the prompts (CLIP), sigmoid (SigLIP), BLIP's match probability (its two-way softmax, each prompt on
            its own), a classifier's as transformers' classification pipelines report it
            (`adapters.base.classification_activation`: softmax over all classes, each class's sigmoid for
            multi-label configs and one-label image classifiers, the logits for regression), a detector's sigmoid;
            for backbones the cosine itself (directions do not compete: no softmax over them).
        explained_layers: the explained block indices, ascending.
        grid_shapes: the token grid of each input: (h, w) patches of an image, (t, h, w) tubelets of a video,
            (frequency patches, time patches) of audio (AST); inputs smaller than the padded tensors (SigLIP 2) have
            zeros outside their own grid.
        image_sizes: the processed size of each input along its own axes, the region of `heatmaps` it covers:
            (height, width) pixels of an image, (frames, height, width) of a video, (mel bins, time frames) of audio,
            `heatmaps` being [batch, targets, mel bins, time frames] with the lowest mel bin in row 0 (the transpose
            of the model's `input_values` [batch, time frames, mel bins]).
        target_ids: classifiers: long [batch, prompts], the explained class of each map; detectors: the query of
            each map.
        text_relevance: with `text_relevance=True`: float32 [batch, prompts, tokens], the raw LeGrad relevance of
            each prompt token for each image (summed over the explained text blocks; zero where the tokenizer's
            attention mask marks padding).
        text_tokens: with `text_relevance=True`: per prompt, a `text_side.Token` (decoded text, special flag) per
            position of `text_relevance`'s last axis.
        word_relevance: with `text_relevance=True`: per image, per prompt, (word, relevance) pairs in prompt
            order: the tokenizer's own words (`word_ids`; a slow tokenizer's sub-word markers), pieces summed.
        explained_text_layers: the explained text block indices, ascending (with `text_relevance=True`).
        modality: the inputs the maps are of, the adapter's `spec.modality`: "image", "video" or "audio".
        frame_times: audio: float32 [time frames], the centre of each spectrogram frame in seconds from the clip's
            start (the feature extractor's hop and window; AST's 10 ms and 25 ms for `input_values`).
        clip_frames: audio given as waveforms: per clip, the frames that hold its audio; the frames after them are
            the feature extractor's padding, which the model sees and the maps cover.
        boxes: detectors: float32 [batch, maps, 4], the explained box of each map as (xmin, ymin, xmax, ymax) in
            the processed image's pixels; `scores` are then the boxes' logits for the map's query, `probabilities`
            their detection scores (the sigmoid, as `zero-shot-object-detection` reports it) and `target_ids`
            the query of each map. Images with fewer maps than the batch's most (`threshold=`) are padded: a
            padding map has box index -1, box 0, score and probability 0, label "" and an all-zero map.
        box_indices: detectors: long [batch, maps], the patch whose box each map explains (-1 on padding maps).
    """

    heatmaps: torch.Tensor
    grid_maps: torch.Tensor
    layer_maps: torch.Tensor | None
    labels: list[str] | list[list[str]]
    scores: torch.Tensor
    explained_layers: list[int]
    grid_shapes: list[tuple[int, ...]]
    image_sizes: list[tuple[int, ...]]
    probabilities: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    text_relevance: torch.Tensor | None = None
    text_tokens: list[list[text_side.Token]] | None = None
    word_relevance: list[list[list[tuple[str, float]]]] | None = None
    explained_text_layers: list[int] | None = None
    frame_times: torch.Tensor | None = None
    clip_frames: list[int] | None = None
    modality: str | None = None
    boxes: torch.Tensor | None = None
    box_indices: torch.Tensor | None = None

    @property
    def num_prompts(self) -> int:
        """Maps per image: the prompts, or the explained classes (`heatmaps.shape[1]`)."""
        return self.heatmaps.shape[1]

    def labels_for(self, b: int) -> list[str]:
        """The labels of image `b`'s maps, one per prompt in map order, whether `labels` is shared or per image.

        Args:
            b: the image's index in the batch (negative counts from the end, as for a list).

        Raises:
            IndexError: `b` is not an image of this output.
            TypeError: `b` is not an int (a bool is refused too).
        """
        if isinstance(b, bool):
            raise TypeError("the image index must be an int, not a bool.")
        b = operator.index(b)
        batch = self.heatmaps.shape[0]
        if not -batch <= b < batch:
            raise IndexError(f"image {b} is out of range: this output holds {batch} image(s) (0..{batch - 1}).")
        shared = not self.labels or isinstance(self.labels[0], str)
        return list(self.labels if shared else self.labels[b])

    def relevance_over_time(self) -> torch.Tensor:
        """When in the clip each target is (`maps.relevance_over_time` of `heatmaps`).

        Returns:
            audio: float32 [batch, targets, time frames], each heatmap's mean over the mel bins (frame t's time in
            seconds is `frame_times[t]`); video: float32 [batch, targets, frames], each frame's mean map.

        Raises:
            ValueError: maps of images, which have no time axis.
        """
        if self.modality not in maps.TIME_AXES:
            shown = "these maps" if self.modality is None else f"{self.modality} maps"
            raise ValueError(
                f"`relevance_over_time` is for audio and video models' maps; {shown} [batch, targets, height, width] "
                "have no time axis."
            )
        return maps.relevance_over_time(self.heatmaps, self.modality)

    def to(self, device: torch.device | str) -> LeGradOutput:
        """A copy with every tensor on `device`."""
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return LeGradOutput(**moved)


class LeGradExplainer:
    """LeGrad maps for the Hugging Face models of `adapters.registry`: dual encoders, classifiers, backbones, detectors.

    Args:
        model: a supported model (`adapters.registry.supported_model_classes()`), on any device and dtype. It is
            left exactly as found: hooks, attention implementation, `requires_grad`, train/eval mode, weights.
        processor: the model's processor (`AutoProcessor.from_pretrained(...)`), needed for raw images and text.
        layers: explained blocks by default: None (the last 2, the authors' default), "all", an int n (the last
            n blocks), or block indices (negative allowed).
        score: "legrad" (default: the per-layer readout of the authors' code: token mean for CLIP and classifiers,
            the pooling head on raw block outputs for SigLIP) or "model" (the model's own pooling at every layer).
            On the localization benchmark (benchmarks/localization.md) "legrad" wins every metric on CLIP and the
            deletion test on a ViT classifier, where "model" localizes better.
        **adapter_options: options of the model's family, passed to its adapter: BLIP's `use_itm_head` (True,
            the default as in `BlipForImageTextRetrieval.forward`: the image-text matching head; False: the
            image-text cosine). A family without such an option raises a TypeError naming it.

    Example:
        >>> from transformers import AutoProcessor, CLIPModel
        >>> model = CLIPModel.from_pretrained("openai/clip-vit-base-patch16")
        >>> processor = AutoProcessor.from_pretrained("openai/clip-vit-base-patch16")
        >>> explainer = LeGradExplainer(model, processor)
        >>> out = explainer.explain(images=image, text=["a cat", "a remote control"])
        >>> out.heatmaps.shape  # [1 image, 2 prompts, 224, 224]
    """

    def __init__(
        self,
        model: nn.Module,
        processor=None,
        layers: LayerSpec = None,
        *,
        score: str = "legrad",
        **adapter_options: object,
    ):
        self.adapter: FamilyAdapter = adapter_for(model, **adapter_options)
        self.model = model
        self.processor = processor
        self.layers = layers
        self._resolve_layers(layers)
        if score not in ("legrad", "model"):
            raise ValueError(f"`score` must be 'legrad' or 'model', got {score!r}.")
        self.score = score

    @property
    def num_layers(self) -> int:
        """Number of blocks in the vision encoder."""
        return len(self.adapter.blocks)

    # --- the verb ----------------------------------------------------------------------------------------------
    def explain(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        videos=None,
        text_embeds: torch.Tensor | None = None,
        targets=None,
        top_k: int | None = None,
        layers: LayerSpec = None,
        correction: bool | None = None,
        null_text_embeds: torch.Tensor | None = None,
        return_layer_maps: bool = False,
        image_size: int | tuple[int, int] | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        directions: torch.Tensor | None = None,
        reference_images=None,
        labels: Sequence[str] | None = None,
        text_relevance: bool = False,
        text_layers: LayerSpec = None,
        audio=None,
        sampling_rate: int | None = None,
        input_values: torch.Tensor | None = None,
        boxes=None,
        threshold: float | None = None,
    ) -> LeGradOutput:
        """Explain where each prompt (or class, or direction) is grounded in each image.

        Args:
            images: a PIL image / array, or a list of them (needs the processor).
            text: prompts for CLIP/SigLIP (needs the processor).
            pixel_values: model-ready images instead of `images`: [batch, channels, height, width] at any size
                (SigLIP 2: [batch, patches, channels * patch**2] with `pixel_attention_mask`, `spatial_shapes`;
                video models: [batch, frames, channels, height, width]).
            videos: video models instead of `images`: one clip (a list of frames, PIL images or [H, W, C] arrays,
                a [frames, H, W, C] array, or a folder of frames or an animated image file as a path: what
                `media.load_video` reads) or a list of clips (needs the processor).
            text_embeds: [prompts, dim] prompt embeddings instead of `text` (L2-normalized here).
            targets: classifiers: class ids or label names, shared by all images, or [batch, prompts] ids; default
                the top-1 predicted class of each image.
            top_k: classifiers without `targets`: explain each image's k most probable classes, most probable first;
                detectors with `threshold`: only each image's k highest pairs above it.
            layers: override the constructor's explained layers for this call.
            correction: SigLIP's null-prompt correction; None means on for SigLIP.
            null_text_embeds: [1, dim] embedding of the null prompt (default: "a photo of a" via the processor).
            return_layer_maps: also return each explained layer's map.
            image_size: with `images`, explain at this processed size (int or (height, width)) instead of the
                model's native one; position embeddings are interpolated.
            directions: backbones (`Dinov2Model`, `CLIPVisionModel`, ...): [K, dim] vectors in the model's pooled
                feature space (a linear probe's rows, a class's mean feature), L2-normalized here.
            reference_images: backbones, instead of `directions`: a PIL image / array or a list of them; each
                one's own normalized pooled embedding is a direction, so the map shows where each image holds what
                the reference shows (processed like `images`, at `image_size`).
            labels: backbones: a name for each direction or reference (default "direction k" / "reference k").
            text_relevance: dual encoders with `text`: also explain which tokens and words of each prompt make
                it match each image (LeGrad on the text tower along each image's embedding; `text_side.py`).
            text_layers: the explained text blocks, in the forms of `layers` (default: the last 2).
            audio: audio classifiers (AST): a 1-D mono waveform (numpy array, list of floats, torch tensor) or a
                list of them, made into spectrograms by the processor (the model's feature extractor).
            sampling_rate: with `audio`, its sampling rate in Hz; must be the feature extractor's (no resampling).
            input_values: audio classifiers, instead of `audio`: model-ready spectrograms [batch, time frames, mel
                bins], as the feature extractor returns them.
            boxes: detectors (OWL-ViT, OWLv2): the box (patch) index to explain per query, [queries] for every
                image or [batch, queries]; default: each query's highest-scoring box.
            threshold: detectors, instead of `boxes`: explain every (box, query) pair whose detection score (the
                sigmoid of its logit) is above it, highest first (see `LeGradOutput.boxes` for the padding).

        Returns:
            LeGradOutput with heatmaps [batch, prompts, height, width] and grid_maps [batch, prompts, h, w]
            (videos: [batch, prompts, frames, height, width] and [batch, prompts, t, h, w]).
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "LeGrad needs gradients, but `torch.inference_mode()` is active; call `explain` outside it "
                "(`torch.no_grad()` is fine: the explainer re-enables gradients where it needs them)."
            )
        adapter = self.adapter
        explained_layers = self._resolve_layers(self.layers if layers is None else layers)
        text_blocks = self._check_text_relevance(text, text_embeds, text_layers) if text_relevance else None
        apply_correction = self._resolve_correction(correction, null_text_embeds)
        request = self.prepare_request(
            images,
            text,
            pixel_values=pixel_values,
            videos=videos,
            text_embeds=text_embeds,
            targets=targets,
            top_k=top_k,
            image_size=image_size,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
            null_prompt=apply_correction,
            null_text_embeds=null_text_embeds if apply_correction else None,
            directions=directions,
            reference_images=reference_images,
            labels=labels,
            audio=audio,
            sampling_rate=sampling_rate,
            input_values=input_values,
            boxes=boxes,
            threshold=threshold,
        )
        pixels = request.pixels

        with _model_lock(self.model), eval_mode(self.model):
            capture = run_trunk(adapter, pixels, explained_layers, self.score)
            batch_directions, labels, target_ids = request.directions_for(capture.image_features)
            num_prompts = batch_directions.shape[1]
            if apply_correction:  # the null prompt's map is explained alongside, then subtracted (maps.py)
                null = request.null_direction.to(batch_directions.device)
                batch_directions = torch.cat([batch_directions, null.expand(pixels.batch_size, 1, -1)], dim=1)
            relevance = layer_relevance(
                adapter, capture, pixels, batch_directions, explained_layers, self.score, engine.PROMPT_CHUNK_SIZE
            )
            scores = adapter.final_scores(capture.image_features, batch_directions[:, :num_prompts])
            probabilities = adapter.probabilities(capture.image_features, batch_directions[:, :num_prompts], scores)
            words = self._explain_text(labels, capture.image_features, text_blocks) if text_relevance else {}
            boxes_found = detection.detection_fields(batch_directions, pixels) if adapter.is_detector else {}

        layer_grids = maps.tokens_to_grids(relevance, adapter.num_prefix_tokens, pixels.grid_shapes)
        grid_maps = layer_grids.sum(dim=2)
        if apply_correction:
            grid_maps = maps.null_prompt_correction(
                grid_maps[:, :num_prompts], grid_maps[:, num_prompts:], pixels.grid_shapes
            )
            layer_grids = layer_grids[:, :num_prompts]
        heatmaps = maps.heatmaps_from_grids(grid_maps, pixels.grid_shapes, pixels.image_sizes, pixels.patch_geometry)
        return LeGradOutput(
            heatmaps=heatmaps,
            grid_maps=grid_maps.float(),
            layer_maps=layer_grids.float() if return_layer_maps else None,
            labels=labels,
            scores=scores.float(),
            probabilities=probabilities.float(),
            explained_layers=list(explained_layers),
            grid_shapes=list(pixels.grid_shapes),
            image_sizes=list(pixels.image_sizes),
            target_ids=target_ids,
            frame_times=getattr(pixels, "frame_times", None),
            clip_frames=getattr(pixels, "clip_frames", None),
            modality=adapter.spec.modality,
            **words,
            **boxes_found,
        )

    __call__ = explain

    # --- the text side -----------------------------------------------------------------------------------------
    def _check_text_relevance(self, text, text_embeds, text_layers: LayerSpec) -> list[int]:
        """The explained text blocks, after checking that this model and these inputs have a text side."""
        if not self.adapter.is_dual_encoder or getattr(self.adapter, "text_layout", None) is None:
            raise ValueError(
                f"`text_relevance` explains a dual encoder's prompts; {self._model_name} has no text tower that the "
                f"package explains ({', '.join(_text_side_families())} have)."
            )
        if text is None or text_embeds is not None:
            raise ValueError("`text_relevance=True` needs the prompts as `text=[...]` (not `text_embeds`).")
        if not self.adapter.has_text_tower:
            raise ValueError(f"`text_relevance` needs the text tower, and {self._model_name} has none.")
        if self._tokenizer is None:
            raise ValueError("`text_relevance=True` needs a processor with a tokenizer for the prompts.")
        trunk = text_side.TextTrunk(self.adapter)
        return self._resolve_layers(text_layers, total=len(trunk.blocks))

    def _explain_text(self, prompts: list[str], image_features: torch.Tensor, layers: list[int]) -> dict:
        """The text-side fields of `LeGradOutput` for `prompts` and the images' final embeddings."""
        tokenizer = self._tokenizer
        kwargs = self.adapter.tokenizer_kwargs(tokenizer)
        offsets = bool(getattr(tokenizer, "is_fast", False))
        encoded = tokenizer(prompts, return_tensors="pt", return_offsets_mapping=offsets, **kwargs)
        text = TextInputs.from_encoding(encoded)
        relevance = text_side.text_relevance(self.adapter, text, F.normalize(image_features.float(), dim=-1), layers)
        tokens = text_side.prompt_tokens(tokenizer, text.input_ids)
        return {
            "text_relevance": relevance,
            "text_tokens": tokens,
            "word_relevance": text_side.word_relevance(prompts, encoded, tokens, tokenizer, relevance),
            "explained_text_layers": layers,
        }

    # --- the request every method shares -----------------------------------------------------------------------
    def prepare_request(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        videos=None,
        text_embeds: torch.Tensor | None = None,
        targets=None,
        top_k: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        null_prompt: bool = False,
        null_text_embeds: torch.Tensor | None = None,
        directions: torch.Tensor | None = None,
        reference_images=None,
        labels: Sequence[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        input_values: torch.Tensor | None = None,
        boxes=None,
        threshold: float | None = None,
    ) -> ExplanationRequest:
        """Validate an explanation's inputs and make them model-ready, without running the vision trunk.

        `explain` and every evaluation baseline start here, so a bad input fails the same way for all of them.
        The checks run in this order: prompts or targets (dual encoders: `text` / `text_embeds`, encoded by the
        text tower; classifiers: `targets`, then `top_k`; backbones: `directions`, or `reference_images` through
        the processor and the model's final readout), then the images (processed or checked `pixel_values`).

        Args:
            images, text, pixel_values, videos, text_embeds, targets, top_k, image_size, pixel_attention_mask,
                spatial_shapes, directions, reference_images, labels, audio, sampling_rate, input_values, boxes,
                threshold: as for `explain`.
            null_prompt: dual encoders: also encode SigLIP's null prompt (`NULL_PROMPT`, or `null_text_embeds`)
                into `request.null_direction`, for LeGrad's correction; the request itself does not apply it.
            null_text_embeds: with `null_prompt`, the null prompt's [1, dim] embedding instead of the processor.

        Returns:
            ExplanationRequest: validated `pixels`; dual encoders and backbones: `directions` [prompts, features]
            and `labels`; classifiers: `targets` and `top_k`. `request.directions_for(features)` resolves them per
            image.

        Example:
            >>> request = explainer.prepare_request(images=image, text=["a cat", "a dog"])
            >>> request.pixels.batch_size, request.directions.shape  # 1, [2 prompts, embedding dim]
        """
        adapter = self.adapter
        self._check_modality(images, pixel_values, image_size, audio, sampling_rate, input_values)
        images = self._raw_inputs(images, videos)
        if null_text_embeds is not None and not null_prompt:
            raise ValueError("`null_text_embeds` is the null prompt's embedding: pass it with `null_prompt=True`.")
        if (boxes is not None or threshold is not None) and not adapter.is_detector:
            raise ValueError(
                "`boxes` and `threshold` choose the detections an open-vocabulary detector explains (a model of "
                f"the zero-shot-object-detection task); {self._model_name} is not one."
            )
        if adapter.is_detector:
            if any(value is not None for value in (targets, directions, reference_images, labels)) or null_prompt:
                raise ValueError(
                    f"{self._model_name} is an open-vocabulary detector: it explains `text` queries (with `boxes` "
                    "or `threshold`, and `top_k`), not `targets`, `directions`, `reference_images`, `labels` or a "
                    "null prompt."
                )
            queries, labels = self._prompt_directions(text, text_embeds)
            pixels = self._pixel_inputs(images, pixel_values, image_size, pixel_attention_mask, spatial_shapes)
            pixels.queries = queries
            selection = detection.detection_request(boxes, threshold, pixels, len(labels), top_k=top_k)
            return ExplanationRequest(pixels, labels=labels, detections=selection)
        if adapter.is_backbone:
            self._refuse_for_backbones(text, text_embeds, targets, top_k, null_prompt)
            directions, labels = self._backbone_directions(directions, reference_images, labels, image_size)
            pixels = self._pixel_inputs(images, pixel_values, image_size, pixel_attention_mask, spatial_shapes)
            return ExplanationRequest(pixels, directions, labels)
        if directions is not None or reference_images is not None or labels is not None:
            takes = "`text` prompts" if adapter.is_dual_encoder else "`targets` (classes)"
            raise ValueError(
                f"`directions`, `reference_images` and `labels` are for backbones (models without text tower or "
                f"classifier, such as Dinov2Model); {self._model_name} takes {takes}."
            )
        if adapter.is_dual_encoder:
            if targets is not None or top_k is not None:
                raise ValueError(
                    f"`targets` and `top_k` are for image classifiers; {self._model_name} takes `text` prompts."
                )
            directions, labels = self._prompt_directions(text, text_embeds)
            prompts = self._tokenize(labels) if adapter.reads_prompts else None
            null_direction = self._null_direction(null_text_embeds) if null_prompt else None
            pixels = self._pixel_inputs(images, pixel_values, image_size, pixel_attention_mask, spatial_shapes)
            pixels.prompts = prompts
            return ExplanationRequest(pixels, directions, labels, null_direction=null_direction)
        if text is not None or text_embeds is not None:
            raise ValueError(
                f"{self._model_name} is an image classifier: it explains classes, not text. Pass `targets` "
                "(class ids or label names from `model.config.id2label`), or nothing for the top-1 class."
            )
        if null_prompt:
            raise ValueError(f"`null_prompt` is for SigLIP's correction; {self._model_name} explains classes.")
        shared_targets = self._validate_targets(targets)
        top_k = self._validate_top_k(top_k, targets)
        if adapter.spec.modality == "audio":
            pixels = self._audio_inputs(audio, sampling_rate, input_values)
        else:
            pixels = self._pixel_inputs(images, pixel_values, image_size, pixel_attention_mask, spatial_shapes)
        if shared_targets is not None and shared_targets.dim() == 2 and shared_targets.shape[0] != pixels.batch_size:
            raise ValueError(f"`targets` has {shared_targets.shape[0]} rows but there are {pixels.batch_size} images.")
        return ExplanationRequest(
            pixels, targets=shared_targets, top_k=top_k, num_labels=adapter.num_labels, id2label=adapter.id2label
        )

    # --- layers and options ------------------------------------------------------------------------------------
    @property
    def _model_name(self) -> str:
        return type(self.model).__name__

    def _resolve_layers(self, layers: LayerSpec, total: int | None = None) -> list[int]:
        total = self.num_layers if total is None else total
        if layers is None:
            return list(range(max(0, total - 2), total))
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"`layers` must be None, 'all', an int or block indices; got the string {layers!r}.")
            return list(range(total))
        if isinstance(layers, bool):
            raise TypeError("`layers` must be None, 'all', an int or block indices, not a bool.")
        if isinstance(layers, int):
            if not 1 <= layers <= total:
                raise ValueError(f"`layers={layers}` asks for the last {layers} blocks; the model has {total}.")
            return list(range(total - layers, total))
        try:
            indices = list(layers)
        except TypeError:
            raise TypeError(
                f"`layers` must be None, 'all', an int or block indices, got {type(layers).__name__}."
            ) from None
        if not indices:
            raise ValueError("`layers` is empty; name at least one block to explain.")
        resolved = set()
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"`layers` holds {index!r}; block indices must be ints.")
            if not -total <= index < total:
                raise ValueError(f"`layers` holds block {index}, but the model has blocks 0..{total - 1}.")
            resolved.add(index % total)
        return sorted(resolved)

    def _resolve_correction(self, correction: bool | None, null_text_embeds) -> bool:
        if correction is None:
            return self.adapter.default_correction
        if correction and not self.adapter.default_correction:
            raise ValueError(
                f"`correction` is SigLIP's null-prompt correction; {self._model_name} does not use it. "
                "Leave `correction` unset."
            )
        if null_text_embeds is not None and not self.adapter.default_correction:
            raise ValueError(f"`null_text_embeds` is for SigLIP's correction; {self._model_name} does not use it.")
        return bool(correction)

    # --- directions (backbones) ----------------------------------------------------------------------------------
    def _refuse_for_backbones(self, text, text_embeds, targets, top_k, null_prompt) -> None:
        what = "a backbone: it has no text tower and no classifier"
        if text is not None or text_embeds is not None:
            raise ValueError(
                f"{self._model_name} is {what}, so it cannot explain text. Pass `directions` [K, "
                f"{self.adapter.embedding_dim}] (vectors in its pooled feature space) or `reference_images`."
            )
        if targets is not None or top_k is not None:
            raise ValueError(
                f"{self._model_name} is {what}: `targets` and `top_k` are for image classifiers. Pass "
                "`directions` or `reference_images`."
            )
        if null_prompt:
            raise ValueError(f"`null_prompt` is for SigLIP's correction; {self._model_name} is a backbone.")

    def _backbone_directions(self, directions, reference_images, labels, image_size) -> tuple[torch.Tensor, list[str]]:
        """Validated, normalized directions [K, dim] (given, or the references' own embeddings) and their labels."""
        if (directions is None) == (reference_images is None):
            raise ValueError(
                f"{self._model_name} is explained along directions: pass exactly one of `directions` [K, "
                f"{self.adapter.embedding_dim}] (vectors in its pooled feature space) or `reference_images` (images "
                "whose own embeddings are the directions)" + (", not both." if directions is not None else ".")
            )
        if directions is not None:
            directions, prefix = self._validate_embeddings(directions, "directions", rows="K"), "direction"
        else:
            directions, prefix = self.reference_directions(reference_images, image_size), "reference"
        if labels is None:
            return directions, [f"{prefix} {k}" for k in range(directions.shape[0])]
        names = [labels] if isinstance(labels, str) else list(labels)
        if len(names) != directions.shape[0] or not all(isinstance(name, str) for name in names):
            raise ValueError(f"`labels` must be {directions.shape[0]} strings, one per {prefix}, got {labels!r}.")
        return directions, names

    def reference_directions(self, reference_images, image_size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Backbones: each reference image's own normalized pooled embedding, the direction it stands for.

        Args:
            reference_images: a PIL image / array / path, or a list of them (through the processor).
            image_size: the processed size, as for `explain`; None: the processor's own.

        Returns:
            float32 [references, dim] on the CPU, L2-normalized: the model's final readout of each reference.
        """
        if not self.adapter.is_backbone:
            raise ValueError(
                f"`reference_images` are for backbones (models without text tower or classifier, such as "
                f"Dinov2Model); {self._model_name} is not one."
            )
        if isinstance(reference_images, torch.Tensor):
            raise TypeError(
                "`reference_images` takes PIL images or arrays for the processor; for feature vectors pass "
                "`directions=` instead."
            )
        if isinstance(reference_images, (list, tuple)) and not reference_images:
            raise ValueError("`reference_images` is an empty list; give at least one image.")
        pixels = self._pixel_inputs(reference_images, None, image_size, None, None)
        with _model_lock(self.model), torch.no_grad(), eval_mode(self.model):
            features = self.adapter.image_features(pixels)
        return F.normalize(features.detach().float().cpu(), dim=-1)

    # --- prompts -----------------------------------------------------------------------------------------------
    def _prompt_directions(self, text, text_embeds) -> tuple[torch.Tensor, list[str]]:
        if text is not None and text_embeds is not None:
            raise ValueError("Pass either `text` or `text_embeds`, not both.")
        if text is None and text_embeds is None:
            raise ValueError(
                f"{self._model_name} explains text prompts: pass `text=[...]` (with a processor) or `text_embeds`."
            )
        if text_embeds is not None and self.adapter.reads_prompts:
            raise ValueError(
                f"{self._model_name}'s readout, as configured, reads each prompt's tokens with the image tokens, so it "
                "takes `text=[...]` (with a processor), not `text_embeds`."
            )
        if text_embeds is not None:
            directions = self._validate_embeddings(text_embeds, "text_embeds")
            return directions, [f"prompt {k}" for k in range(directions.shape[0])]
        if not self.adapter.has_text_tower:
            raise TypeError(
                f"{self._model_name} has no text tower: pass `text_embeds` [prompts, {self.adapter.embedding_dim}] "
                "instead of `text` (e.g. from the matching text model with projection)."
            )
        prompts = [text] if isinstance(text, str) else list(text)
        if not prompts:
            raise ValueError("`text` is an empty list; give at least one prompt.")
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"`text` must hold strings, got {type(prompt).__name__}: {prompt!r}.")
        if self.adapter.reads_prompts:
            return self.adapter.prompt_directions(len(prompts)), prompts
        return self._encode_text(prompts), prompts

    def _null_direction(self, null_text_embeds) -> torch.Tensor:
        if null_text_embeds is not None:
            null = self._validate_embeddings(null_text_embeds, "null_text_embeds")
            if null.shape[0] != 1:
                raise ValueError(f"`null_text_embeds` must be [1, dim], got {tuple(null_text_embeds.shape)}.")
            return null
        if self._tokenizer is None:
            raise ValueError(
                "SigLIP's correction needs the null prompt's embedding: pass a processor, or `null_text_embeds` "
                "[1, dim], or `correction=False`."
            )
        return self._encode_text([NULL_PROMPT])

    def _validate_embeddings(self, embeddings, name: str, rows: str = "prompts") -> torch.Tensor:
        """`embeddings` [rows, dim] (or [dim]) checked (width, finite, non-zero rows) and L2-normalized."""
        if not isinstance(embeddings, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor [{rows}, dim], got {type(embeddings).__name__}.")
        if embeddings.dim() == 1:
            embeddings = embeddings.unsqueeze(0)
        dim = self.adapter.embedding_dim
        width = "pooled feature" if self.adapter.is_backbone else "image embedding"
        if embeddings.dim() != 2 or embeddings.shape[-1] != dim:
            raise ValueError(
                f"`{name}` must be [{rows}, {dim}] for this {self._model_name} (its {width} width), got "
                f"{tuple(embeddings.shape)}."
            )
        if embeddings.shape[0] == 0:
            raise ValueError(
                f"`{name}` holds no {'prompt' if rows == 'prompts' else 'direction'} (0 rows); give at least one."
            )
        embeddings = embeddings.detach().float()
        if not torch.isfinite(embeddings).all():
            raise ValueError(f"`{name}` contains NaN or inf values.")
        norms = embeddings.norm(dim=-1)
        if (norms == 0).any():
            rows = torch.nonzero(norms == 0).flatten().tolist()
            raise ValueError(f"`{name}` rows {rows} have zero norm; a direction cannot be taken from them.")
        return F.normalize(embeddings, dim=-1)

    @property
    def _tokenizer(self):
        if self.processor is None:
            return None
        return getattr(self.processor, "tokenizer", None) or (
            self.processor if callable(getattr(self.processor, "encode", None)) else None
        )

    def _prompt_tokenizer(self):
        """The tokenizer and the keyword arguments the family's text tower wants (prompts need one)."""
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise ValueError(
                "Text prompts need a processor with a tokenizer: `LeGradExplainer(model, "
                "AutoProcessor.from_pretrained(model_id))`, or pass `text_embeds` instead of `text`."
            )
        return tokenizer, self.adapter.tokenizer_kwargs(tokenizer)

    def _tokenize(self, prompts: list[str]) -> TextInputs:
        """All prompts in one encoding, for a readout that reads them itself (`adapter.reads_prompts`)."""
        tokenizer, kwargs = self._prompt_tokenizer()
        self._warn_about_truncation(tokenizer, prompts, kwargs["max_length"])
        return TextInputs.from_encoding(tokenizer(prompts, return_tensors="pt", **kwargs))

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokenizer, kwargs = self._prompt_tokenizer()
        self._warn_about_truncation(tokenizer, prompts, kwargs["max_length"])
        embeddings = []
        with torch.no_grad(), eval_mode(self.model):
            for start in range(0, len(prompts), TEXT_BATCH_SIZE):
                encoded = tokenizer(prompts[start : start + TEXT_BATCH_SIZE], return_tensors="pt", **kwargs)
                text = TextInputs.from_encoding(encoded)
                embeddings.append(self.adapter.text_features(text).detach().float().cpu())
        return F.normalize(torch.cat(embeddings), dim=-1)

    @staticmethod
    def _warn_about_truncation(tokenizer, prompts: list[str], max_length: int) -> None:
        lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
        too_long = [prompt for prompt, length in zip(prompts, lengths, strict=True) if length > max_length]
        if too_long:
            first = too_long[0] if len(too_long[0]) <= 60 else too_long[0][:57] + "..."
            warnings.warn(
                f"{len(too_long)} prompt(s) exceed the text model's {max_length} tokens and are truncated "
                f"(e.g. {first!r}); their maps explain the truncated text.",
                stacklevel=4,
            )

    # --- targets (classifiers) ---------------------------------------------------------------------------------
    def _validate_targets(self, targets) -> torch.Tensor | None:
        """Targets as long ids: [prompts] shared by all images, or [batch, prompts]; None for top-1."""
        if targets is None:
            return None
        if isinstance(targets, torch.Tensor):
            ids = targets.detach().cpu()
            if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dim() > 2:
                raise ValueError("`targets` as a tensor must hold integer class ids, [prompts] or [batch, prompts].")
            ids = ids.long().reshape(-1) if ids.dim() == 0 else ids.long()
        else:
            items = [targets] if isinstance(targets, (str, int)) else list(targets)
            if not items:
                raise ValueError("`targets` is empty; give at least one class id or label, or None for the top-1.")
            label2id = {str(k): int(v) for k, v in (self.model.config.label2id or {}).items()}
            resolved = []
            for item in items:
                if isinstance(item, str):
                    if item in label2id:
                        resolved.append(label2id[item])
                    elif item.strip().lstrip("-").isdigit():  # "3" from a command line or a text column: id 3
                        resolved.append(int(item))
                    else:
                        known = ", ".join(sorted(label2id)[:10])
                        raise ValueError(
                            f"unknown target label {item!r}; `model.config.label2id` knows: {known}"
                            f"{', ...' if len(label2id) > 10 else ''} (or give a class id)."
                        )
                elif isinstance(item, int) and not isinstance(item, bool):
                    resolved.append(item)
                else:
                    raise TypeError(f"`targets` must be class ids or label names, got {item!r}.")
            ids = torch.tensor(resolved, dtype=torch.long)
        if ids.numel() == 0:
            raise ValueError("`targets` is empty; give at least one class id or label, or None for the top-1.")
        num_labels = self.adapter.num_labels
        out_of_range = ids[(ids < 0) | (ids >= num_labels)]
        if out_of_range.numel():
            raise ValueError(
                f"target id {int(out_of_range[0])} is out of range: the model has {num_labels} classes (0.."
                f"{num_labels - 1})."
            )
        return ids

    def _validate_top_k(self, top_k, targets) -> int:
        if top_k is None:
            return 1
        if targets is not None:
            raise ValueError("Pass either `targets` or `top_k`, not both.")
        num_labels = self.adapter.num_labels
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_labels:
            raise ValueError(f"`top_k` must be an int from 1 to {num_labels} (the model's classes), got {top_k!r}.")
        return top_k

    # --- images ------------------------------------------------------------------------------------------------
    def _pixel_inputs(self, images, pixel_values, image_size, pixel_attention_mask, spatial_shapes) -> PixelInputs:
        if images is not None and pixel_values is not None:
            raise ValueError("Pass either `images` or `pixel_values`, not both.")
        if images is None and pixel_values is None:
            raise ValueError(f"Nothing to explain: pass `{self._raw_name}` (with a processor) or `pixel_values`.")
        if images is not None and self._takes_videos:
            pixel_values = self._process_videos(images, image_size)["pixel_values"]
        elif images is not None:
            if isinstance(images, torch.Tensor):
                raise TypeError(
                    "`images` takes PIL images or arrays for the processor; pass a model-ready tensor as "
                    "`pixel_values=` instead."
                )
            if isinstance(images, (list, tuple)) and not images:
                raise ValueError("`images` is an empty list; give at least one image.")
            processed = self._process_images(images, image_size)
            pixel_values = processed["pixel_values"]
            pixel_attention_mask = processed.get("pixel_attention_mask")
            spatial_shapes = processed.get("spatial_shapes")
        elif image_size is not None:
            raise ValueError("`image_size` applies to raw `images`; `pixel_values` are explained at their own size.")
        pixels = self.adapter.prepare_pixels(
            pixel_values, pixel_attention_mask=pixel_attention_mask, spatial_shapes=spatial_shapes
        )
        return self._on_model_device(pixels)

    def _on_model_device(self, pixels: PixelInputs) -> PixelInputs:
        """`pixels` with its tensors on the model's input device, floating-point ones in its dtype."""
        device, dtype = self.adapter.input_device, self.adapter.input_dtype
        for name, value in pixels.model_kwargs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                pixels.model_kwargs[name] = value.to(dtype) if value.is_floating_point() else value
        return pixels

    # --- audio -------------------------------------------------------------------------------------------------
    def _check_modality(self, images, pixel_values, image_size, audio, sampling_rate, input_values) -> None:
        """Refuse images for a model that takes audio, and audio for one that takes images."""
        modality = self.adapter.spec.modality
        if modality == "audio" and any(value is not None for value in (images, pixel_values, image_size)):
            raise ValueError(
                f"{self._model_name} classifies audio, not images: pass `audio=` (a 1-D waveform or a list of them) "
                "with `sampling_rate=`, or model-ready `input_values=` [batch, time frames, mel bins]."
            )
        if modality != "audio" and any(value is not None for value in (audio, sampling_rate, input_values)):
            raise ValueError(
                f"`audio`, `sampling_rate` and `input_values` are for audio classifiers (such as "
                f"ASTForAudioClassification); {self._model_name} takes {modality} inputs, not audio."
            )

    def _audio_inputs(self, audio, sampling_rate: int | None, input_values: torch.Tensor | None) -> PixelInputs:
        """Waveforms through the feature extractor, or checked `input_values`, on the model's device."""
        if audio is not None and input_values is not None:
            raise ValueError("Pass either `audio` or `input_values`, not both.")
        if audio is None and input_values is None:
            raise ValueError(
                "Nothing to explain: pass `audio=` (a 1-D waveform or a list of them, with `sampling_rate=` and a "
                "feature extractor) or model-ready `input_values=`."
            )
        if input_values is not None:
            if sampling_rate is not None:
                raise ValueError("`sampling_rate` goes with raw `audio`; `input_values` are spectrograms already.")
            pixels = self.adapter.prepare_input_values(input_values)
        else:
            extractor = getattr(self.processor, "feature_extractor", None) or self.processor
            pixels = self.adapter.prepare_audio(audio, sampling_rate, extractor)
        return self._on_model_device(pixels)

    @property
    def _takes_videos(self) -> bool:
        return self.adapter.spec.modality == "video"

    @property
    def _raw_name(self) -> str:
        return "videos" if self._takes_videos else "images"

    def _raw_inputs(self, images, videos):
        """The raw inputs of the model's modality (`videos` for a video model, else `images`), the other refused."""
        if self._takes_videos and images is not None:
            raise ValueError(
                f"{self._model_name} is a video model: pass `videos=` (one clip as a list of frames or a [frames, "
                "height, width, channels] array, or a list of clips) or `pixel_values` [batch, frames, channels, "
                "height, width], not `images`."
            )
        if videos is not None and not self._takes_videos:
            modality = self.adapter.spec.modality
            raise ValueError(f"`videos` are for video models; {self._model_name} takes {modality} inputs.")
        return videos if self._takes_videos else images

    def _process_videos(self, videos, image_size):
        if self.processor is None:
            raise ValueError(
                "Raw videos need the model's processor: `LeGradExplainer(model, AutoImageProcessor.from_pretrained("
                "model_id))`, or pass model-ready `pixel_values` [batch, frames, channels, height, width]."
            )
        clips = as_videos(videos)
        kwargs = self.image_processor_kwargs(image_size)
        try:
            return self.image_processor(clips, return_tensors="pt", **kwargs)
        except Exception as error:  # the processor's own errors are about the frames; say so
            raise ValueError(f"the processor could not read the videos: {error}") from error

    @property
    def image_processor(self):
        """The processor's image part (or the processor itself when it is an image processor), or None."""
        if self.processor is None:
            return None
        return getattr(self.processor, "image_processor", None) or self.processor

    def image_processor_kwargs(self, image_size: int | tuple[int, int] | None) -> dict[str, object]:
        """The settings that make the image processor produce `image_size` (height, width); {} for its own size."""
        if image_size is None:
            return {}
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"`image_size` must be a positive int or (height, width), got {image_size!r}.")
        return self.adapter.processor_size_kwargs(self.image_processor, size)

    def _process_images(self, images, image_size):
        if self.processor is None:
            raise ValueError(
                "Raw images need the model's processor: `LeGradExplainer(model, AutoProcessor.from_pretrained("
                "model_id))`, or pass model-ready `pixel_values`."
            )
        kwargs = self.image_processor_kwargs(image_size)
        pictures = [load_image(image) for image in images] if isinstance(images, (list, tuple)) else load_image(images)
        try:
            return self.image_processor(images=pictures, return_tensors="pt", **kwargs)
        except Exception as error:  # the processor's own errors are about the images; say so
            raise ValueError(f"the processor could not read the images: {error}") from error


def _text_side_families() -> list[str]:
    """The display names of the registered families whose adapters describe their text tower (`text_layout`)."""
    from .adapters import registry

    named = {a.spec.name for a in registry.registered_adapters() if getattr(a, "text_layout", None) is not None}
    return [spec.display_name for name, spec in registry.families().items() if name in named]
