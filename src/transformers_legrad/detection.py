"""Explaining an open-vocabulary detector: which boxes are explained, and the boxes that come with the maps.

A detector's readout (`FamilyAdapter.layer_features` and `image_features` of an adapter with `is_detector`) is the
class logit of every (patch, query) pair, patch-major: features [batch, patches * queries], the logit of box j for
query q at index `j * queries + q` (each patch predicts one box). Explaining box j for query q is then the
engine's usual score `<readout, direction>` with a one-hot direction, so the map of (j, q) at block l is LeGrad's
E^l of that logit computed from block l's tokens.

Which (box, query) pairs get a map is chosen per image from the model's final logits:

- default: per query, its highest-scoring box (maps in query order);
- `boxes=`: the given box indices, one per query ([queries], shared by the images) or per image and query
  ([batch, queries]);
- `threshold=`: every (box, query) pair whose detection score (the sigmoid of its logit, the probability the
  `zero-shot-object-detection` pipeline reports) is above it, highest score first; with `top_k=` only each image's
  k highest of them (that pipeline's `top_k`), so the others are not explained.

Images with fewer pairs above a threshold than others are padded to the batch's largest count (at least one):
a padding map has box index `PADDING` (-1), box (0, 0, 0, 0), score and probability 0, label "" and an all-zero
map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import geometry
from .adapters import PixelInputs

#: The box index (and query index) of a padding map.
PADDING = -1
#: The pipeline's default threshold on detection scores, as `zero-shot-object-detection`'s.
PIPELINE_THRESHOLD = 0.1
#: The keys of a box in the pipeline's results, in `LeGradOutput.boxes`' order.
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")

Labels = list[str] | list[list[str]]


@dataclass(frozen=True)
class DetectionRequest:
    """Which (box, query) pairs of each image to explain (see the module docstring).

    Attributes:
        num_queries: the text queries.
        boxes: long [queries] or [batch, queries] box indices; None: each query's highest-scoring box.
        threshold: explain every pair whose sigmoid score is above it (with `boxes` None); None: not used.
        top_k: with `threshold`: explain only each image's `top_k` highest pairs above it; None: all of them.
    """

    num_queries: int
    boxes: torch.Tensor | None = None
    threshold: float | None = None
    top_k: int | None = None

    def pairs(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(box ids, query ids), long [batch, maps] each, `PADDING` where an image has fewer maps.

        Args:
            logits: float [batch, patches, queries], the model's final class logits.
        """
        batch, _, queries = logits.shape
        query_ids = torch.arange(queries).expand(batch, -1)
        if self.threshold is None:
            if self.boxes is None:
                return logits.argmax(dim=1).cpu(), query_ids.clone()
            boxes = self.boxes if self.boxes.dim() == 2 else self.boxes.expand(batch, -1)
            return boxes.clone(), query_ids.clone()
        probabilities = logits.detach().float().sigmoid().cpu()
        kept = []  # per image: its pairs above the threshold, [pairs, (box, query)], highest score first
        for image in probabilities:
            pairs = torch.nonzero(image > self.threshold)
            order = image[pairs[:, 0], pairs[:, 1]].argsort(descending=True, stable=True)
            kept.append(pairs[order][: self.top_k])
        maps = max(1, max(len(pairs) for pairs in kept))
        box_ids = torch.full((batch, maps), PADDING, dtype=torch.long)
        query_ids = torch.full((batch, maps), PADDING, dtype=torch.long)
        for b, pairs in enumerate(kept):
            box_ids[b, : len(pairs)], query_ids[b, : len(pairs)] = pairs[:, 0], pairs[:, 1]
        return box_ids, query_ids

    def directions_for(self, features: torch.Tensor, labels: list[str]) -> tuple[torch.Tensor, Labels, torch.Tensor]:
        """One-hot directions of the explained pairs, their labels and query ids.

        Args:
            features: [batch, patches * queries], the model's final logits, patch-major.
            labels: the queries' text, one per query.

        Returns:
            (directions float32 [batch, maps, patches * queries] on `features`' device, all zero on padding maps;
            labels, one list of `maps` strings shared by the images or one per image ("" on padding maps);
            query ids long [batch, maps] on the CPU, `PADDING` on padding maps).
        """
        batch, width = features.shape
        logits = features.view(batch, width // self.num_queries, self.num_queries)
        box_ids, query_ids = self.pairs(logits)
        valid = box_ids != PADDING
        flat = (box_ids * self.num_queries + query_ids).clamp_min(0)
        directions = torch.zeros(batch, flat.shape[1], width, device=features.device)
        directions.scatter_(2, flat.unsqueeze(-1).to(features.device), valid.unsqueeze(-1).float().to(features.device))
        per_image = [[labels[q] if q != PADDING else "" for q in row] for row in query_ids.tolist()]
        shared = all(row == per_image[0] for row in per_image)
        return directions, per_image[0] if shared else per_image, query_ids


def explained_pairs(directions: torch.Tensor, num_queries: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(box ids, query ids), long [batch, maps] on the CPU, of one-hot detection directions (`PADDING` on zero rows)."""
    flat = directions.argmax(dim=-1).cpu()
    valid = (directions != 0).any(dim=-1).cpu()
    box_ids = torch.where(valid, flat // num_queries, PADDING)
    query_ids = torch.where(valid, flat % num_queries, PADDING)
    return box_ids, query_ids


def detection_fields(directions: torch.Tensor, pixels: PixelInputs) -> dict[str, torch.Tensor]:
    """The `LeGradOutput` fields of a detector's maps: `boxes` and `box_indices`.

    Args:
        directions: [batch, maps, patches * queries], the explained pairs' one-hot directions.
        pixels: the images, with the model's predicted boxes (`pixels.boxes`, set by the trunk forward).

    Returns:
        {"boxes": float32 [batch, maps, 4] (xmin, ymin, xmax, ymax) in the processed image's pixels, zeros on
        padding maps; "box_indices": long [batch, maps], the patch whose box each map explains, `PADDING` on
        padding maps}.
    """
    predicted = pixels.boxes.detach().float().cpu()  # [batch, patches, 4] cxcywh, relative
    box_ids, _ = explained_pairs(directions, directions.shape[-1] // predicted.shape[1])
    chosen = predicted.gather(1, box_ids.clamp_min(0).unsqueeze(-1).expand(-1, -1, 4))
    center, size = chosen[..., :2], chosen[..., 2:]
    corners = torch.cat([center - size / 2, center + size / 2], dim=-1)
    scale = torch.tensor([[w, h, w, h] for h, w in pixels.image_sizes], dtype=torch.float32).unsqueeze(1)
    boxes = torch.where((box_ids != PADDING).unsqueeze(-1), corners * scale, 0.0)
    return {"boxes": boxes, "box_indices": box_ids}


def boxes_in_original_image(
    boxes: torch.Tensor, processed_size: tuple[int, int], original_size: tuple[int, int], image_processor
) -> torch.Tensor:
    """Boxes in the processed image's pixels mapped to the original image's, as the detector's own pipeline does.

    The image processor's `post_process_object_detection` does the mapping (OWLv2's processor pads the image to a
    square before resizing, so its boxes scale by the longer side).

    Args:
        boxes: float [maps, 4] (xmin, ymin, xmax, ymax) in the processed image's pixels.
        processed_size: (height, width) of the processed image.
        original_size: (height, width) of the original image.
        image_processor: the model's image processor.

    Returns:
        float32 [maps, 4] (xmin, ymin, xmax, ymax) in the original image's pixels.
    """
    height, width = processed_size
    relative = boxes.float() / torch.tensor([width, height, width, height], dtype=torch.float32)
    center = torch.cat([(relative[:, :2] + relative[:, 2:]) / 2, relative[:, 2:] - relative[:, :2]], dim=-1)
    return geometry.detector_boxes_on_original(image_processor, center, original_size)


def detection_request(
    boxes, threshold, pixels: PixelInputs, num_queries: int, top_k: int | None = None
) -> DetectionRequest:
    """`boxes=`, `threshold=` and `top_k=` of `explain` checked against the images' patches and the queries.

    Raises:
        ValueError: both `boxes` and `threshold` are given, a box index is not a patch of the images, the shape
            does not match the queries (or the images), the threshold is not a number in [0, 1), or `top_k` is
            not a positive int or comes without `threshold`.
        TypeError: `boxes` does not hold integers.
    """
    if boxes is not None and threshold is not None:
        raise ValueError("Pass either `boxes` (box indices) or `threshold` (a detection score), not both.")
    if top_k is not None:
        if threshold is None:
            raise ValueError(
                "a detector's `top_k` keeps the k highest (box, query) pairs above `threshold`: pass `threshold` too "
                "(without it each query's highest box is explained, or the given `boxes`)."
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive int, got {top_k!r}.")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise ValueError(f"`threshold` must be a detection score in [0, 1), got {threshold!r}.")
        return DetectionRequest(num_queries, threshold=float(threshold), top_k=top_k)
    if boxes is None:
        return DetectionRequest(num_queries)
    ids = boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else torch.tensor(boxes)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"`boxes` must hold integer box indices, got {ids.dtype}.")
    ids = ids.long().reshape(1) if ids.dim() == 0 else ids.long()
    expected = f"[{num_queries}] (one box per query) or [{pixels.batch_size}, {num_queries}] (per image and query)"
    if ids.dim() not in (1, 2) or ids.shape[-1] != num_queries or (ids.dim() == 2 and len(ids) != pixels.batch_size):
        raise ValueError(f"`boxes` must be {expected}, got shape {tuple(ids.shape)}.")
    patches = min(h * w for h, w in pixels.grid_shapes)
    if ((ids < 0) | (ids >= patches)).any():
        raise ValueError(
            f"`boxes` holds {int(ids[(ids < 0) | (ids >= patches)][0])}, but the images give boxes 0..{patches - 1} "
            "(one per patch, row-major)."
        )
    return DetectionRequest(num_queries, boxes=ids)
