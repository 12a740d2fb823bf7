"""`ExplanationRequest`: one explanation's validated inputs, shared by LeGrad and every evaluation baseline.

`LeGradExplainer.prepare_request(images=..., text=... | targets=... | directions=... | reference_images=..., ...)`
checks the arguments (before any
forward of the vision trunk), runs the processor and the text tower, and returns this request; each method then
runs its own forward on `request.pixels` and asks `request.directions_for(features)` for what to explain in each
image. The same bad input therefore fails the same way, with the same message, whichever method is asked:

    >>> request = LeGradExplainer(model, processor).prepare_request(images=image, text=["a cat", "a dog"])
    >>> features = adapter.image_features(request.pixels)         # the method's own forward
    >>> directions, labels, target_ids = request.directions_for(features)
    >>> scores = torch.einsum("bf,bkf->bk", features, directions)  # S, the score each method explains

A dual encoder's directions are its prompts' L2-normalized text embeddings, the same for every image; a
backbone's are the given `directions` or the reference images' own pooled embeddings, L2-normalized, the same for
every image too; a classifier's are one-hot class rows, from `targets` (shared or per image) or from each image's
`top_k` predicted classes, which is why they can only be resolved once the model's final features are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .adapters import PixelInputs
from .detection import DetectionRequest

__all__ = ["ExplanationRequest"]

Labels = list[str] | list[list[str]]


@dataclass(frozen=True)
class ExplanationRequest:
    """Validated, model-ready inputs of one explanation (built by `LeGradExplainer.prepare_request`).

    Attributes:
        pixels: the model-ready images and their patch grids, on the model's input device and dtype.
        directions: dual encoders: float32 [prompts, features], the prompts' L2-normalized embeddings (CPU);
            backbones: the given directions or the references' embeddings, L2-normalized; None for classifiers.
        labels: dual encoders: the prompts (or "prompt k" for `text_embeds`); backbones: `labels` (or "direction
            k" / "reference k"); None for classifiers, whose labels
            are the class names of the targets `directions_for` resolves.
        targets: classifiers: long [prompts] class ids shared by all images, or [batch, prompts] per image; None
            for each image's `top_k` most probable classes (and for dual encoders).
        top_k: classifiers without `targets`: how many of each image's most probable classes to explain.
        num_labels: classifiers: the number of classes (the width of a one-hot direction).
        id2label: classifiers: class id to name (`model.config.id2label`); ids it lacks are named "class i".
        null_direction: float32 [1, features], the embedding of SigLIP's null prompt when LeGrad's correction
            asked for it (`prepare_request(null_prompt=True)`); None otherwise. Not part of `directions_for`.
        detections: detectors: which (box, query) pairs to explain, resolved per image by `directions_for`
            (`detection.DetectionRequest`); `labels` are then the queries. None for other families.
    """

    pixels: PixelInputs
    directions: torch.Tensor | None = None
    labels: list[str] | None = None
    targets: torch.Tensor | None = None
    top_k: int = 1
    num_labels: int = 0
    id2label: dict[int, str] = field(default_factory=dict)
    null_direction: torch.Tensor | None = None
    detections: DetectionRequest | None = None

    @property
    def is_dual_encoder(self) -> bool:
        """Whether the request explains fixed directions, the same for every image (text prompts of CLIP and SigLIP,
        a backbone's directions), rather than classes resolved per image."""
        return self.directions is not None

    @property
    def batch_size(self) -> int:
        """Number of images."""
        return self.pixels.batch_size

    def directions_for(self, features: torch.Tensor) -> tuple[torch.Tensor, Labels, torch.Tensor | None]:
        """What to explain in each image, given the model's final features of `pixels`.

        Args:
            features: [batch, features], the model's own final readout of `self.pixels` (image embeddings of a
                dual encoder, logits of a classifier, as `FamilyAdapter.image_features` returns them).

        Returns:
            (directions float32 [batch, prompts, features] on `features`' device, so that the score of prompt k
            is `<features[b], directions[b, k]>`; labels, a list of `prompts` strings shared by all images or one
            such list per image; target_ids long [batch, prompts] on the CPU for classifiers (detectors: each map's
            query), else None).
        """
        if features.dim() != 2 or features.shape[0] != self.batch_size:
            raise ValueError(
                f"`features` must be [{self.batch_size}, features] (one row per image of the request), got "
                f"{tuple(features.shape)}."
            )
        batch = features.shape[0]
        if self.detections is not None:
            return self.detections.directions_for(features, self.labels)
        if self.is_dual_encoder:
            directions = self.directions.to(features.device).unsqueeze(0).expand(batch, -1, -1)
            return directions, self.labels, None
        target_ids = self._target_ids(features.detach())
        directions = F.one_hot(target_ids, self.num_labels).float().to(features.device)
        return directions, self._target_labels(target_ids), target_ids

    def _target_ids(self, logits: torch.Tensor) -> torch.Tensor:
        if self.targets is None:
            return logits.topk(self.top_k, dim=-1).indices.cpu()
        if self.targets.dim() == 1:
            return self.targets.unsqueeze(0).expand(logits.shape[0], -1).contiguous()
        return self.targets

    def _target_labels(self, target_ids: torch.Tensor) -> Labels:
        per_image = [[self.id2label.get(int(i), f"class {int(i)}") for i in row] for row in target_ids.tolist()]
        if all(row == per_image[0] for row in per_image):
            return per_image[0]
        return per_image
