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
The base class runs the steps: `preprocess` reads one image, its collate function stacks `batch_size` of them
(`num_workers` DataLoader workers preprocess), `_forward` explains each batch with one `LeGradExplainer.explain`
call (one trunk forward), and `postprocess` turns one image's maps into its results.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import transformers
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from . import detection, geometry, visualize
from . import images as images_module
from .adapters import registry
from .explainer import LeGradExplainer

TASK = "legrad-explanation"
DEFAULT_MODEL = ("openai/clip-vit-base-patch16", "main")
# The image processor's outputs that the explainer takes (SigLIP 2 adds the mask and the patch grid shapes).
_PIXEL_KEYS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


class LeGradExplanationPipeline(Pipeline):
    """LeGrad heatmaps for CLIP, SigLIP/SigLIP 2, ViT-family classifiers and backbones, as a transformers pipeline.

    Call arguments:
        images: a PIL image, local path, URL or numpy array, a list of them, or a `KeyDataset` / generator of them
            (the results stream, one image at a time).
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
        threshold: detectors: explain every (box, label) pair whose score is above it (default 0.1, as
            `zero-shot-object-detection`); `top_k` then keeps the k highest.

    A detector's results are those of `zero-shot-object-detection`, `{"score", "label", "box": {"xmin", "ymin",
    "xmax", "ymax"}}` in the original image's pixels, plus the box's "heatmap" and "overlay" (the box drawn on it).

    Each result is `{"label", "score", "heatmap" (PIL "L", original size), "overlay" (PIL RGB)}`; "score" is the
    probability as the family's own pipeline reports it (softmax over labels for CLIP, sigmoid for SigLIP, softmax
    over classes for classifiers; for backbones the cosine with the direction, no softmax).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = None  # dual encoders need one; classifiers have none

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        components = _Components(image_processor=self.image_processor, tokenizer=self.tokenizer)
        self.explainer = LeGradExplainer(self.model, components)
        _warn_about_a_new_head(self.model)

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
        **unknown,
    ):
        if unknown:
            raise TypeError(f"unknown argument(s) for the {TASK} pipeline: {', '.join(sorted(unknown))}")
        preprocess = _given(
            candidate_labels=candidate_labels,
            hypothesis_template=hypothesis_template,
            image_size=image_size,
            timeout=timeout,
        )
        detector = bool(getattr(registry.adapter_class_for(type(self.model)), "is_detector", False))
        if detector and threshold is None:
            threshold = detection.PIPELINE_THRESHOLD
        forward = _given(
            threshold=threshold,
            top_k=None if detector else top_k,
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
            top_k=top_k if detector else None,
        )
        return preprocess, forward, postprocess

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

    def preprocess(self, image, candidate_labels=None, hypothesis_template="{}", image_size=None, timeout=None):
        """One image: its pixel tensors (batch of 1), the loaded picture, and the labels with their prompts."""
        picture = images_module.load(image, timeout)
        labels, prompts = self._labels_and_prompts(candidate_labels, hypothesis_template)
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
                raise ValueError(
                    f"{type(self.model).__name__} is an image classifier: use top_k=... or targets=[...], "
                    "not candidate_labels."
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
        labels = prompt_labels
        if (
            labels is None or output.boxes is not None
        ):  # classifiers and backbones: the explained classes or directions, from the output
            per_image_labels = [output.labels_for(b) for b in range(len(pictures))]
        else:
            per_image_labels = [labels] * len(pictures)
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
        top_k=None,
    ):
        """One image's results, sorted by score: the maps mapped back onto the original picture.

        `model_outputs` holds heatmaps [1, prompts, height, width], probabilities [1, prompts], image_sizes [1, 2],
        the image's labels and its picture (detectors: boxes [1, maps, 4] and box_indices [1, maps] too).
        """
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
        entries = sorted(entries, key=lambda entry: entry["score"], reverse=True)
        return entries[:top_k] if top_k else entries

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


def _given(**parameters) -> dict[str, Any]:
    """The parameters the caller gave (not None), so the step's own defaults apply to the rest."""
    return {name: value for name, value in parameters.items() if value is not None}


class _Components:
    """The pipeline's separately loaded image processor and tokenizer, shaped like a processor."""

    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer


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
