"""The `legrad-explanation` pipeline task: LeGrad heatmaps with the transformers one-liner.

    >>> import transformers_legrad  # registers the task
    >>> from transformers import pipeline
    >>> explain = pipeline("legrad-explanation", model="openai/clip-vit-large-patch14")
    >>> explain("cats.jpg", candidate_labels=["a cat", "a remote control"])
    [{"label": "a cat", "score": 0.98, "heatmap": <PIL L>, "overlay": <PIL RGB>}, ...]

It follows `zero-shot-image-classification` (CLIP/SigLIP: `candidate_labels`) and `image-classification`
(classifiers: `top_k`, or `targets`); backbones (`Dinov2Model`, `CLIPVisionModel`, ...) take `directions=` [K, dim]
or `reference_images=[...]`, with `labels=` naming them; detectors (OWL-ViT, OWLv2) follow
`zero-shot-object-detection` (`candidate_labels`, `threshold`, `top_k`) and add each box's map. One image gives a list
of dicts sorted by score, highest first; a list of images gives a list of such lists; a `KeyDataset` or a generator
streams one such list per image.

Video and audio classifiers (the adapter's `spec.modality`) take what `video-classification` and
`audio-classification` take:

    >>> explain = pipeline("legrad-explanation", model="MCG-NJU/videomae-base-finetuned-kinetics")
    >>> explain("clip_frames/", top_k=2)  # a folder of frames, a GIF, a list of frames or a [frames, H, W, C] array
    [{"label": ..., "score": ..., "frames": [<PIL RGB>, ...], "strip": <PIL RGB>}, ...]
    >>> explain = pipeline("legrad-explanation", model="MIT/ast-finetuned-audioset-10-10-0.4593")
    >>> explain("clip.wav")  # a file, a 1-D array at the extractor's rate, or {"raw": array, "sampling_rate": sr}
    [{"label": ..., "score": ..., "overlay": <PIL RGB>, "relevance_over_time": [...], "times": [...]}]

The base class runs the steps: `preprocess` reads one image, its collate function stacks `batch_size` of them
(`num_workers` DataLoader workers preprocess), `_forward` explains each batch with one `LeGradExplainer.explain`
call (one trunk forward), and `postprocess` turns one image's maps into its results.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import transformers
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from . import detection, geometry, media, visualize, visualize_media
from . import images as images_module
from .adapters import registry
from .explainer import LeGradExplainer
from .videos import as_videos, is_one_clip

TASK = "legrad-explanation"
DEFAULT_MODEL = ("openai/clip-vit-base-patch16", "main")
# The image processor's outputs that the explainer takes (SigLIP 2 adds the mask and the patch grid shapes).
_PIXEL_KEYS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


class LeGradExplanationPipeline(Pipeline):
    """LeGrad heatmaps for CLIP, SigLIP/SigLIP 2, ViT-family classifiers and backbones, as a transformers pipeline.

    Call arguments:
        images: a PIL image, local path, URL or numpy array, a list of them, or a `KeyDataset` / generator of them
            (the results stream, one image at a time). Video models: a clip (a folder of frames, an animated
            image file such as a GIF, a list of frames, or a [frames, H, W, C] array) or a list of clips. Audio
            models: a clip (an audio file, a 1-D waveform at the feature extractor's rate, or
            `{"raw" or "array": waveform, "sampling_rate": rate}`, resampled to the extractor's rate) or a list.
        num_frames, frame_sampling_rate: video models: the frames taken from each clip, the model's
            `config.num_frames` by default, spread over the whole clip (`media.sample_frames`), or with
            `frame_sampling_rate` r, as transformers' `video-classification` does: `num_frames` frames evenly from
            the first `num_frames * r`.
        candidate_labels: prompts (CLIP/SigLIP).
        hypothesis_template: how each label becomes a prompt, default "{}" (the label as it is).
        top_k / targets: classifiers: the k most probable classes (default 1), or given class ids/names.
        directions / reference_images, labels: backbones: [K, dim] directions in the pooled feature space, or
            reference images (paths, URLs, PIL images) whose own embeddings are the directions; `labels` names them.
        layers, image_size, correction: as in `LeGradExplainer.explain`.
        batch_size: images per explanation (one trunk forward each).
        num_workers: DataLoader workers that load and preprocess the images.
        alpha, colormap: how the overlay is drawn.
        return_tensors: also return "map", float32 [height, width] in [0, 1] at the original image size.
        text_relevance: dual encoders: also return "words", `[{"word", "relevance"}]` in prompt order, which words
            of the prompt make it match the image (`LeGradExplainer.explain(..., text_relevance=True)`).
        Options of the model's family are given when the pipeline is made, as `LeGradExplainer` takes them:
        `pipeline("legrad-explanation", model=..., use_itm_head=False)` (BLIP's cosine instead of its matching head),
        `attention="temporal"` (TimeSformer).
        threshold: detectors: explain every (box, label) pair whose score is above it (default 0.1, as
            `zero-shot-object-detection`); with `top_k` only each image's k highest pairs are explained.

    A detector's results are those of `zero-shot-object-detection`, `{"score", "label", "box": {"xmin", "ymin",
    "xmax", "ymax"}}` in the original image's pixels, plus the box's "heatmap" and "overlay" (the box drawn on it).

    Each result is `{"label", "score", "heatmap" (PIL "L", original size), "overlay" (PIL RGB)}`; "score" is the
    probability as the family's own pipeline reports it (softmax over labels for CLIP, sigmoid for SigLIP, softmax
    over classes for classifiers, or each class's sigmoid for a multi-label one; for backbones the cosine with the
    direction, no softmax). Video models give `{"label", "score", "frames" (one PIL RGB overlay per sampled frame,
    original size), "strip" (`visualize_media.video_strip`)}` and with `return_tensors` "map" [frames, height,
    width]; audio models `{"label", "score", "overlay" (`visualize_media.spectrogram_figure`), "relevance_over_time"
    (a float per spectrogram frame), "times" (each frame's time in seconds)}` and with `return_tensors` "map" [mel
    bins, time frames], all over the frames that hold the clip's audio (`LeGradOutput.clip_frames`): the feature
    extractor pads every clip to the model's length (AST: 1024 frames, 10.24 s), and the model sees that padding,
    but the results leave it out (the map keeps its values, normalized over the whole input).
    """

    _load_processor = False
    # Both tried, neither required by transformers' loader: an image or video model has an image processor, an
    # audio model a feature extractor; `__init__` says which one is missing.
    _load_image_processor = None
    _load_feature_extractor = None
    _load_tokenizer = None  # dual encoders need one; classifiers have none

    def __init__(self, *args, **kwargs):
        # The family's own options (BLIP's `use_itm_head`, TimeSformer's `attention`), given to `pipeline(...)`, go to
        # the explainer's adapter; the base class would take them for call parameters.
        model = kwargs.get("model", args[0] if args else None)
        family = registry.adapter_class_for(type(model)) if model is not None else None
        options = {name: kwargs.pop(name) for name in (family.option_names() if family else ()) if name in kwargs}
        super().__init__(*args, **kwargs)
        adapter = registry.adapter_class_for(type(self.model))
        modality = adapter.spec.modality if adapter is not None else "image"  # unsupported: the explainer says so
        if modality == "audio":
            components = _Components(feature_extractor=self._required(self.feature_extractor, "feature extractor"))
        else:
            components = _Components(
                image_processor=self._required(self.image_processor, "image processor"), tokenizer=self.tokenizer
            )
        self.explainer = LeGradExplainer(self.model, components, **options)
        self.modality = modality
        _warn_about_a_new_head(self.model)

    def _required(self, component, name: str):
        if component is None:
            raise ValueError(
                f"no {name} was found for {type(self.model).__name__} (its folder or Hub repo needs a "
                f"preprocessor_config.json): pass `{name.replace(' ', '_')}=` to `pipeline(...)`."
            )
        return component

    def _sanitize_parameters(
        self,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str | None = None,
        top_k: int | None = None,
        targets=None,
        directions=None,
        labels: Sequence[str] | None = None,
        layers=None,
        image_size=None,
        correction: bool | None = None,
        timeout: float | None = None,
        alpha: float | None = None,
        colormap: str | None = None,
        return_tensors: bool | None = None,
        text_relevance: bool | None = None,
        threshold: float | None = None,
        num_frames: int | None = None,
        frame_sampling_rate: int | None = None,
        **unknown,
    ):
        if unknown:
            raise TypeError(self._unknown_arguments(sorted(unknown)))
        preprocess = _given(
            candidate_labels=candidate_labels,
            hypothesis_template=hypothesis_template,
            image_size=image_size,
            timeout=timeout,
            num_frames=num_frames,
            frame_sampling_rate=frame_sampling_rate,
        )
        detector = bool(getattr(registry.adapter_class_for(type(self.model)), "is_detector", False))
        if detector and threshold is None:
            threshold = detection.PIPELINE_THRESHOLD
        forward = _given(
            threshold=threshold,
            top_k=top_k,  # detectors: only each image's k highest pairs above the threshold are explained
            targets=targets,
            directions=directions,
            labels=labels,
            layers=layers,
            correction=correction,
            text_relevance=text_relevance or None,
        )
        postprocess = _given(
            image_size=image_size,
            alpha=alpha,
            colormap=colormap,
            return_tensors=return_tensors,
        )
        return preprocess, forward, postprocess

    def _unknown_arguments(self, names: list[str]) -> str:
        """The message for arguments that are neither the pipeline's nor options of the model's family."""
        message = f"unknown argument(s) for the {TASK} pipeline: {', '.join(names)}"
        family = registry.adapter_class_for(type(self.model))
        if family is None:
            return message
        options = ", ".join(family.option_names()) or "none"
        return (
            f"{message}; they are not options of {type(self.model).__name__}'s family ({family.spec.display_name}) "
            f"either, whose options (given to `pipeline(...)`) are: {options}."
        )

    def __call__(self, images=None, candidate_labels: Sequence[str] | None = None, **kwargs: Any):
        """Explain one image (a list of dicts), a list of images (a list of lists), or stream a data set.

        A `KeyDataset` or a generator gives an iterator of per-image results; `batch_size` and `num_workers` work
        as in every transformers pipeline.
        """
        images = kwargs.pop("image", images) if images is None else images
        if images is None:
            raise ValueError(f"the {TASK} pipeline needs images: pipe(image, candidate_labels=[...]).")
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        if kwargs.get("reference_images") is not None:
            self._references_as_directions(kwargs)
        else:
            kwargs.pop("reference_images", None)  # given as None: not given
        if isinstance(images, tuple):
            images = list(images)
        if isinstance(images, list) and not images:
            return []  # the base class would index the first item
        if self.modality == "video" and is_one_clip(images):
            return super().__call__([images], **kwargs)[0]  # a list of frames is one clip, not a batch of videos
        return super().__call__(images, **kwargs)

    def _references_as_directions(self, kwargs: dict[str, Any]) -> None:
        """`reference_images` become `directions` once per call (their embeddings at `image_size`), so batches and
        streamed images do not embed them again; their labels default to "reference k"."""
        if kwargs.get("directions") is not None:
            raise ValueError("Pass either `directions` or `reference_images`, not both.")
        if not self.explainer.adapter.is_backbone:
            raise ValueError(
                f"`reference_images` are for backbones (models without text tower or classifier, such as "
                f"Dinov2Model); {type(self.model).__name__} is not one."
            )
        directions = self.explainer.reference_directions(kwargs.pop("reference_images"), kwargs.get("image_size"))
        kwargs["directions"] = directions
        if kwargs.get("labels") is None:
            kwargs["labels"] = [f"reference {k}" for k in range(directions.shape[0])]

    def preprocess(
        self,
        image,
        candidate_labels=None,
        hypothesis_template="{}",
        image_size=None,
        timeout=None,
        num_frames=None,
        frame_sampling_rate=None,
    ):
        """One input: its model tensors (batch of 1), what the pictures are drawn on, and the labels with prompts.

        An image gives its pixel tensors and picture; a video its sampled frames (`frames`, their indices in the
        clip) and pixel_values [1, frames, channels, height, width]; an audio clip its waveform at the feature
        extractor's rate and the spectrogram the model sees.
        """
        labels, prompts = self._labels_and_prompts(candidate_labels, hypothesis_template)
        if self.modality != "video" and (num_frames is not None or frame_sampling_rate is not None):
            raise ValueError(f"`num_frames` and `frame_sampling_rate` are for video models; {self._takes}.")
        if self.modality != "image" and image_size is not None:
            raise ValueError(f"`image_size` is for image models; {self._takes}, explained at its own input size.")
        if self.modality == "video":
            return {**self._preprocess_video(image, num_frames, frame_sampling_rate), "labels": None, "prompts": None}
        if self.modality == "audio":
            return {**self._preprocess_audio(image), "labels": None, "prompts": None}
        picture = images_module.load(image, timeout)
        processed = self.explainer.image_processor(
            images=[picture], return_tensors="pt", **self.explainer.image_processor_kwargs(image_size)
        )
        # SigLIP 2 pads every image to max_num_patches, so these stack along dim 0 in the base collate function.
        model_inputs = {key: processed[key] for key in _PIXEL_KEYS if key in processed}
        return {**model_inputs, "picture": picture, "labels": labels, "prompts": prompts}

    def _labels_and_prompts(self, candidate_labels, hypothesis_template: str):
        if self.explainer.adapter.is_backbone and candidate_labels is not None:
            raise ValueError(
                f"{type(self.model).__name__} is a backbone (no text tower, no classifier): use directions=[K, dim] "
                "or reference_images=[...], not candidate_labels."
            )
        if not (self.explainer.adapter.is_dual_encoder or self.explainer.adapter.is_detector):
            if candidate_labels is not None:
                article = "an" if self.modality[0] in "aeiou" else "a"
                raise ValueError(
                    f"{type(self.model).__name__} is {article} {self.modality} classifier: use top_k=... or "
                    "targets=[...], not candidate_labels."
                )
            return None, None
        if candidate_labels is None:
            raise ValueError(f"{type(self.model).__name__} explains text prompts: pipe(image, candidate_labels=[...]).")
        labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels)
        return labels, [hypothesis_template.format(label) for label in labels]

    def _forward(
        self,
        model_inputs,
        top_k=None,
        targets=None,
        directions=None,
        labels=None,
        layers=None,
        correction=None,
        text_relevance=None,
        threshold=None,
    ):
        """Explain a batch with one `explain` call (one trunk forward).

        `model_inputs` is one `preprocess` result, or with `batch_size` > 1 the base class's collation of several:
        tensors concatenated along dim 0, every other item a list with one entry per image.
        """
        if self.modality != "image":
            others = {"directions": directions, "labels": labels, "correction": correction}
            others["text_relevance"] = text_relevance
            for name, value in others.items():
                if value is not None:
                    raise ValueError(
                        f"`{name}` is not for {self.modality} classifiers: {type(self.model).__name__} takes "
                        "top_k=... or targets=[...]."
                    )
            return self._forward_media(model_inputs, top_k=top_k, targets=targets, layers=layers)
        collated = isinstance(model_inputs["picture"], list)
        pictures = model_inputs["picture"] if collated else [model_inputs["picture"]]
        # Labels and prompts are call arguments, the same for every image of the batch.
        prompt_labels = model_inputs["labels"][0] if collated else model_inputs["labels"]
        prompts = model_inputs["prompts"][0] if collated else model_inputs["prompts"]
        backbone = {"directions": directions, "labels": labels}
        output = self.explainer.explain(
            text=prompts,
            targets=targets,
            top_k=top_k,
            layers=layers,
            correction=correction,
            **{name: value for name, value in backbone.items() if value is not None},
            **{key: model_inputs[key] for key in _PIXEL_KEYS if key in model_inputs},
            **({"text_relevance": True} if text_relevance else {}),
            **({"threshold": threshold} if threshold is not None else {}),
        )
        if output.boxes is not None:  # detectors: each map's candidate label, from its query (not its prompt)
            per_image_labels = [
                [prompt_labels[q] if q != detection.PADDING else "" for q in row] for row in output.target_ids.tolist()
            ]
        elif prompt_labels is None:  # classifiers and backbones: the explained classes or directions
            per_image_labels = [output.labels_for(b) for b in range(len(pictures))]
        else:
            per_image_labels = [prompt_labels] * len(pictures)
        # Tensors keep their batch dim; the base class slices them (and the lists) into one item per image.
        model_outputs = {
            "heatmaps": output.heatmaps,
            "probabilities": output.probabilities,
            "image_sizes": torch.tensor(output.image_sizes),
            "labels": per_image_labels,
            "picture": pictures,
        }
        if output.boxes is not None:
            model_outputs["boxes"], model_outputs["box_indices"] = output.boxes, output.box_indices
        if output.word_relevance is not None:  # per image, per prompt: [{"word", "relevance"}]
            model_outputs["words"] = [
                [[{"word": word, "relevance": value} for word, value in words] for words in per_prompt]
                for per_prompt in output.word_relevance
            ]
        if not collated:  # goes to postprocess as it is: make it look like one item of an unbatched batch
            model_outputs["labels"], model_outputs["picture"] = per_image_labels[0], pictures[0]
            if "words" in model_outputs:
                model_outputs["words"] = model_outputs["words"][0]
        return model_outputs

    def postprocess(
        self,
        model_outputs,
        image_size=None,
        alpha: float = 0.5,
        colormap: str = "inferno",
        return_tensors=False,
    ):
        """One image's results, sorted by score: the maps mapped back onto the original picture.

        `model_outputs` holds heatmaps [1, prompts, height, width], probabilities [1, prompts], image_sizes [1, 2],
        the image's labels and its picture (detectors: boxes [1, maps, 4] and box_indices [1, maps] too;
        videos and audio: see `_postprocess_video` and `_postprocess_audio`).
        """
        if self.modality == "video":
            return _sorted(self._postprocess_video(model_outputs, alpha, colormap, return_tensors))
        if self.modality == "audio":
            return _sorted(self._postprocess_audio(model_outputs, alpha, colormap, return_tensors))
        picture = model_outputs["picture"]
        full_maps = geometry.maps_on_original(
            model_outputs["heatmaps"][0],
            model_outputs["image_sizes"][0].tolist(),
            picture.size,
            self.explainer.image_processor,
            self.explainer.image_processor_kwargs(image_size),
        )
        boxes = self._boxes_on_original(model_outputs, picture) if "boxes" in model_outputs else None
        entries = []
        for k, (label, full) in enumerate(zip(model_outputs["labels"], full_maps, strict=True)):
            if boxes is not None and boxes[k] is None:
                continue  # a padding map: this image has fewer boxes above the threshold than another of its batch
            entry = {
                "label": label,
                "score": float(model_outputs["probabilities"][0, k]),
                "heatmap": visualize.heatmap_image(full),
                "overlay": visualize.overlay(picture, full, alpha=alpha, colormap=colormap),
            }
            if boxes is not None:
                entry["box"] = boxes[k]
                entry["overlay"] = visualize.draw_box(entry["overlay"], [boxes[k][key] for key in detection.BOX_KEYS])
            if return_tensors:
                entry["map"] = full
            if "words" in model_outputs:
                entry["words"] = model_outputs["words"][k]
            entries.append(entry)
        return _sorted(entries)

    def _boxes_on_original(self, model_outputs, picture) -> list[dict[str, int] | None]:
        """Each map's box as `zero-shot-object-detection` gives it, in the original image's pixels (None: padding)."""
        processed_size = tuple(model_outputs["image_sizes"][0].tolist())
        original = detection.boxes_in_original_image(
            model_outputs["boxes"][0], processed_size, (picture.height, picture.width), self.explainer.image_processor
        )
        indices = model_outputs["box_indices"][0].tolist()
        return [
            None if index == detection.PADDING else dict(zip(detection.BOX_KEYS, box.int().tolist(), strict=True))
            for index, box in zip(indices, original, strict=True)
        ]

    # --- video and audio ---------------------------------------------------------------------------------------
    @property
    def _takes(self) -> str:
        return f"{type(self.model).__name__} takes {self.modality}"

    def _preprocess_video(self, video, num_frames, frame_sampling_rate) -> dict[str, Any]:
        """One clip read (`media.load_video`), sampled to the model's frame count, through the image processor."""
        frames = media.load_video(video)
        indices = _frame_indices(len(frames), num_frames or int(self.model.config.num_frames), frame_sampling_rate)
        frames = [frames[int(i)] for i in indices]
        processed = self.explainer.image_processor(as_videos([frames]), return_tensors="pt")
        return {"pixel_values": processed["pixel_values"], "frames": frames, "frame_indices": indices.tolist()}

    def _preprocess_audio(self, audio) -> dict[str, Any]:
        """One clip read (`media.load_audio`) at the feature extractor's rate, and its spectrogram [1, frames, mel]."""
        extractor = self.explainer.processor.feature_extractor
        rate = int(extractor.sampling_rate)
        sampling_rate = None
        if isinstance(audio, dict):
            audio, sampling_rate = _audio_from_dict(audio)
        waveform, rate = media.load_audio(audio, sampling_rate=sampling_rate, target_rate=rate)
        spectrogram = extractor(waveform, sampling_rate=rate, return_tensors="pt")["input_values"]
        return {"waveform": waveform, "sampling_rate": rate, "spectrogram": spectrogram}

    def _forward_media(self, model_inputs, top_k=None, targets=None, layers=None) -> dict[str, Any]:
        """A batch of clips explained with one `explain` call; per clip the maps and what postprocess draws on."""
        collated = isinstance(model_inputs["labels"], list)
        if self.modality == "video":
            given = {"pixel_values": model_inputs["pixel_values"]}
            keep = ("frames", "frame_indices")
        else:
            waveforms = model_inputs["waveform"] if collated else [model_inputs["waveform"]]
            rates = model_inputs["sampling_rate"] if collated else [model_inputs["sampling_rate"]]
            given = {"audio": list(waveforms), "sampling_rate": rates[0]}  # one rate: the feature extractor's
            keep = ()
        output = self.explainer.explain(targets=targets, top_k=top_k, layers=layers, **given)
        batch = output.heatmaps.shape[0]
        labels = [output.labels_for(b) for b in range(batch)]
        model_outputs = {
            "heatmaps": output.heatmaps,
            "probabilities": output.probabilities,
            "labels": labels if collated else labels[0],
            **{key: model_inputs[key] for key in keep},
        }
        if self.modality == "audio":
            times = output.frame_times.expand(batch, -1)
            total = times.shape[-1]
            clip_frames = output.clip_frames or [total] * batch  # waveforms: each clip's frames before the padding
            model_outputs.update(
                relevance=output.relevance_over_time(),
                times=times,
                spectrogram=model_inputs["spectrogram"],
                clip_frames=torch.tensor(clip_frames),
            )
        return model_outputs

    def _postprocess_video(self, model_outputs, alpha: float, colormap: str, return_tensors) -> list[dict]:
        """One clip's results: per target its maps on the original frames, as overlays and as a strip."""
        frames = model_outputs["frames"]
        captions = [f"frame {index}" for index in model_outputs["frame_indices"]]
        entries = []
        for k, label in enumerate(model_outputs["labels"]):
            maps = geometry.maps_on_original(
                model_outputs["heatmaps"][0, k],  # [frames, H, W]: each frame placed like an image's map
                tuple(model_outputs["heatmaps"].shape[-2:]),
                frames[0].size,
                self.explainer.image_processor,
            )
            score = float(model_outputs["probabilities"][0, k])
            entry = {
                "label": label,
                "score": score,
                "frames": [
                    visualize.overlay(frame, frame_map, alpha=alpha, colormap=colormap)
                    for frame, frame_map in zip(frames, maps, strict=True)
                ],
                "strip": visualize_media.video_strip(
                    frames, maps, label=label, score=score, alpha=alpha, colormap=colormap, frame_labels=captions
                ),
            }
            if return_tensors:
                entry["map"] = maps
            entries.append(entry)
        return entries

    def _postprocess_audio(self, model_outputs, alpha: float, colormap: str, return_tensors) -> list[dict]:
        """One clip's results: per target the spectrogram figure and the relevance at each frame's time, over the
        frames that hold the clip's audio (the feature extractor's padding after them is left out)."""
        frames = int(model_outputs["clip_frames"][0])
        spectrogram = model_outputs["spectrogram"][0, :frames].T  # [mel bins, clip frames], lowest bin first
        times = model_outputs["times"][0, :frames]
        seconds_per_frame = float(times[1] - times[0]) if len(times) > 1 else None
        entries = []
        for k, label in enumerate(model_outputs["labels"]):
            heatmap, curve = model_outputs["heatmaps"][0, k, :, :frames], model_outputs["relevance"][0, k, :frames]
            score = float(model_outputs["probabilities"][0, k])
            figure = visualize_media.spectrogram_figure(
                spectrogram,
                heatmap,
                relevance_over_time=curve,
                label=label,
                score=score,
                alpha=alpha,
                colormap=colormap,
                seconds_per_frame=seconds_per_frame,
            )
            entry = {
                "label": label,
                "score": score,
                "overlay": figure,
                "relevance_over_time": curve.tolist(),
                "times": times.tolist(),
            }
            if return_tensors:
                entry["map"] = heatmap
            entries.append(entry)
        return entries


def _sorted(entries: list[dict]) -> list[dict]:
    return sorted(entries, key=lambda entry: entry["score"], reverse=True)


def _frame_indices(total: int, num_frames: int, frame_sampling_rate: int | None) -> np.ndarray:
    """Which of a clip's `total` frames a video model sees: `num_frames` spread over the clip
    (`media.sample_frames`), or with `frame_sampling_rate` r transformers' rule, `num_frames` evenly from the
    first `num_frames * r` frames."""
    if frame_sampling_rate is None:
        return media.sample_frames(np.arange(total), num_frames)
    rate = frame_sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"`frame_sampling_rate` must be a positive int, got {rate!r}.")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"`num_frames` must be a positive int, got {num_frames!r}.")
    if num_frames * rate > total:
        raise ValueError(
            f"`num_frames={num_frames}` frames every `frame_sampling_rate={rate}` need {num_frames * rate} frames, "
            f"but the clip has {total}; lower `frame_sampling_rate` or leave it out (frames spread over the clip)."
        )
    return np.linspace(0, num_frames * rate - 1, num=num_frames, dtype=np.int64)


def _audio_from_dict(inputs: dict) -> tuple[Any, int]:
    """`{"raw" or "array": waveform, "sampling_rate": rate}`, as transformers' audio-classification takes it."""
    if "sampling_rate" not in inputs or not ("raw" in inputs or "array" in inputs):
        raise ValueError(
            'an audio dict must hold "raw" (or "array"), the waveform, and "sampling_rate", its rate in Hz; '
            f"got the keys {sorted(inputs)}."
        )
    return inputs["raw"] if "raw" in inputs else inputs["array"], inputs["sampling_rate"]


def _given(**parameters) -> dict[str, Any]:
    """The parameters the caller gave (not None), so the step's own defaults apply to the rest."""
    return {name: value for name, value in parameters.items() if value is not None}


class _Components:
    """The pipeline's separately loaded image processor, tokenizer or feature extractor, shaped like a processor."""

    def __init__(self, image_processor=None, tokenizer=None, feature_extractor=None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor


def _warn_about_a_new_head(model) -> None:
    """A checkpoint saved as one class (`ViTMSNModel`) that an Auto class loaded as another
    (`ViTMSNForImageClassification`) has a newly initialized, untrained head: its maps would explain random scores."""
    saved_as = list(getattr(model.config, "architectures", None) or ())
    if saved_as and type(model).__name__ not in saved_as:
        warnings.warn(
            f"the checkpoint was saved as {', '.join(saved_as)} but loads as {type(model).__name__}, whose head it "
            "does not hold: the head is newly initialized, so the maps explain untrained scores. Load a checkpoint "
            "that has this head, or one of the supported classes it was saved as.",
            stacklevel=3,
        )


class _SavedClassCheckpoint:
    """Loads a checkpoint whose config names a served class as that class, before the Auto classes try: they map a
    model type to one class per task, not always the saved one. `AutoModelForImageClassification` would load a
    `Dinov2Model` checkpoint as `Dinov2ForImageClassification` with a new, untrained head, and
    `AutoModelForZeroShotImageClassification` a `BlipForImageTextRetrieval` one as `BlipModel`. Any other checkpoint
    is refused here (ValueError), and transformers' loader goes on to the Auto classes as before."""

    _HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "subfolder")

    @classmethod
    def from_pretrained(cls, model: str, **kwargs):
        hub = {name: kwargs[name] for name in cls._HUB_KWARGS if name in kwargs}
        config, _ = transformers.PretrainedConfig.get_config_dict(model, **hub)
        served = registry.served_classes()
        for name in config.get("architectures") or ():
            if name in served and hasattr(transformers, name):
                return getattr(transformers, name).from_pretrained(model, **kwargs)
        raise ValueError(f"{model} names no class the package serves; it loads through the Auto classes.")


def register_pipeline() -> None:
    """Register the task for every Auto class of the registered families (zero-shot first, so a CLIP/SigLIP
    checkpoint loads as a dual encoder; checkpoints load as the served class their config names, and
    `AutoModel` comes last). Called again after `register_adapter`, it updates the classes in place."""
    pt_model = (_SavedClassCheckpoint, *(getattr(transformers, name) for name in registry.auto_classes()))
    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if registered is not None and registered["impl"] is LeGradExplanationPipeline:
        registered["pt"] = pt_model
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=LeGradExplanationPipeline,
        pt_model=pt_model,
        default={"model": DEFAULT_MODEL},
        type="image",
    )
