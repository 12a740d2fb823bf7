"""The `legrad-explanation` pipeline task: LeGrad heatmaps with the transformers one-liner.

    >>> import transformers_legrad  # registers the task
    >>> from transformers import pipeline
    >>> explain = pipeline("legrad-explanation", model="openai/clip-vit-large-patch14")
    >>> explain("cats.jpg", candidate_labels=["a cat", "a remote control"])
    [{"label": "a cat", "score": 0.98, "heatmap": <PIL L>, "overlay": <PIL RGB>}, ...]

It follows `zero-shot-image-classification` (CLIP/SigLIP: `candidate_labels`) and `image-classification`
(classifiers: `top_k`, or `targets`). One image gives a list of dicts sorted by score, highest first; a list of
images gives a list of such lists. Images are explained `batch_size` at a time, each batch with one trunk forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import transformers
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from . import geometry, visualize
from . import images as images_module
from .adapters import registry
from .explainer import LeGradExplainer

TASK = "legrad-explanation"
DEFAULT_MODEL = ("openai/clip-vit-base-patch16", "main")


class LeGradExplanationPipeline(Pipeline):
    """LeGrad heatmaps for CLIP, SigLIP/SigLIP 2 and ViT-family classifiers, as a transformers pipeline.

    Call arguments:
        images: a PIL image, local path, URL or numpy array, or a list of them.
        candidate_labels: prompts (CLIP/SigLIP).
        hypothesis_template: how each label becomes a prompt, default "{}" (the label as it is).
        top_k / targets: classifiers: the k most probable classes (default 1), or given class ids/names.
        layers, image_size, correction: as in `LeGradExplainer.explain`.
        batch_size: images per explanation (one trunk forward each).
        alpha, colormap: how the overlay is drawn.
        return_tensors: also return "map", float32 [height, width] in [0, 1] at the original image size.

    Each result is `{"label", "score", "heatmap" (PIL "L", original size), "overlay" (PIL RGB)}`; "score" is the
    probability as the family's own pipeline reports it (softmax over labels for CLIP, sigmoid for SigLIP, softmax
    over classes for classifiers).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = None  # dual encoders need one; classifiers have none

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        components = _Components(image_processor=self.image_processor, tokenizer=self.tokenizer)
        self.explainer = LeGradExplainer(self.model, components)

    def _sanitize_parameters(
        self,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str | None = None,
        top_k: int | None = None,
        targets=None,
        layers=None,
        image_size=None,
        correction: bool | None = None,
        timeout: float | None = None,
        alpha: float | None = None,
        colormap: str | None = None,
        return_tensors: bool | None = None,
        **unknown,
    ):
        if unknown:
            raise TypeError(f"unknown argument(s) for the {TASK} pipeline: {', '.join(sorted(unknown))}")
        preprocess = {}
        for name, value in (
            ("candidate_labels", candidate_labels),
            ("hypothesis_template", hypothesis_template),
            ("image_size", image_size),
            ("timeout", timeout),
        ):
            if value is not None:
                preprocess[name] = value
        forward = {}
        for name, value in (("top_k", top_k), ("targets", targets), ("layers", layers), ("correction", correction)):
            if value is not None:
                forward[name] = value
        postprocess = {}
        for name, value in (("alpha", alpha), ("colormap", colormap), ("return_tensors", return_tensors)):
            if value is not None:
                postprocess[name] = value
        return preprocess, forward, postprocess

    def __call__(self, images=None, candidate_labels: Sequence[str] | None = None, **kwargs: Any):
        """Explain one image (a list of dicts) or several (a list of lists), `batch_size` images per call."""
        images = kwargs.pop("image", images) if images is None else images
        if images is None:
            raise ValueError(f"the {TASK} pipeline needs images: pipe(image, candidate_labels=[...]).")
        batch_size = kwargs.pop("batch_size", None) or self._batch_size or 1
        kwargs.pop("num_workers", None)
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            return []
        results = []
        for start in range(0, len(items), int(batch_size)):
            model_inputs = self.preprocess(items[start : start + int(batch_size)], **preprocess)
            model_outputs = self.forward(model_inputs, **forward)
            results.extend(self.postprocess(model_outputs, **postprocess))
        return results[0] if single else results

    def preprocess(self, images, candidate_labels=None, hypothesis_template="{}", image_size=None, timeout=None):
        pictures = [images_module.load(image, timeout) for image in images]
        if self.explainer.adapter.is_dual_encoder:
            if candidate_labels is None:
                raise ValueError(
                    f"{type(self.model).__name__} explains text prompts: pipe(image, candidate_labels=[...])."
                )
            labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels)
            prompts = [hypothesis_template.format(label) for label in labels]
        elif candidate_labels is not None:
            raise ValueError(
                f"{type(self.model).__name__} is an image classifier: use top_k=... or targets=[...], "
                "not candidate_labels."
            )
        else:
            labels = prompts = None
        processed = self.explainer.image_processor(
            images=pictures, return_tensors="pt", **self.explainer.image_processor_kwargs(image_size)
        )
        tensors = {
            k: processed[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes") if k in processed
        }
        return {
            "tensors": tensors,
            "pictures": pictures,
            "labels": labels,
            "prompts": prompts,
            "image_size": image_size,
        }

    def _forward(self, model_inputs, top_k=None, targets=None, layers=None, correction=None):
        prompts = model_inputs["prompts"]
        output = self.explainer.explain(
            text=prompts,
            targets=targets,
            top_k=top_k,
            layers=layers,
            correction=correction,
            **model_inputs["tensors"],
        )
        return {
            "output": output.to("cpu"),
            "pictures": model_inputs["pictures"],
            "labels": model_inputs["labels"],
            "image_size": model_inputs["image_size"],
        }

    def postprocess(self, model_outputs, alpha: float = 0.5, colormap: str = "inferno", return_tensors=False):
        output = model_outputs["output"]
        size_kwargs = self.explainer.image_processor_kwargs(model_outputs["image_size"])
        results = []
        for b, picture in enumerate(model_outputs["pictures"]):
            width, height = picture.size
            region = geometry.processed_region(
                self.explainer.image_processor, width, height, size_kwargs.get("size"), size_kwargs.get("crop_size")
            )
            labels = model_outputs["labels"] or output.labels
            labels = labels if isinstance(labels[0], str) else labels[b]
            processed_height, processed_width = output.image_sizes[b]
            entries = []
            for k, label in enumerate(labels):
                heatmap = output.heatmaps[b, k, :processed_height, :processed_width]
                full = geometry.heatmap_on_original(heatmap, region, width, height)
                entry = {
                    "label": label,
                    "score": float(output.probabilities[b, k]),
                    "heatmap": visualize.heatmap_image(full),
                    "overlay": visualize.overlay(picture, full, alpha=alpha, colormap=colormap),
                }
                if return_tensors:
                    entry["map"] = full
                entries.append(entry)
            results.append(sorted(entries, key=lambda entry: entry["score"], reverse=True))
        return results


class _Components:
    """The pipeline's separately loaded image processor and tokenizer, shaped like a processor."""

    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer


def register_pipeline() -> None:
    """Register the task for every Auto class of the registered families (zero-shot first, so a CLIP/SigLIP
    checkpoint loads as a dual encoder). Called again after `register_adapter`, it updates the classes in place."""
    pt_model = tuple(getattr(transformers, name) for name in registry.auto_classes())
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
