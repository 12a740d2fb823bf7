"""Localization and faithfulness metrics of the LeGrad paper, for any explanation map.

Everything here works on plain maps, never on a model: a *heatmap* is a float [height, width] array or tensor with
values in [0, 1] (e.g. `LeGradOutput.heatmaps[b, k]` placed on the image), a *mask* is a bool [height, width]
array of the same size, True on the object the map was asked about. The protocols follow the papers the LeGrad
paper (Bousselham et al., arXiv 2404.03214, Sec. 4) takes its numbers from:

- segmentation (ImageNet-Segmentation, Gur et al. 2021 and Chefer et al. 2021): the heatmap is binarized (default
  threshold 0.5) into foreground/background and scored by pixel accuracy, mIoU over the two classes and the
  average precision of the raw pixel scores (`segmentation_counts`, `mean_iou`, `pixel_accuracy`,
  `segmentation_average_precision`, accumulated over a dataset by `SegmentationMetrics`);
- the pointing game (Zhang et al. 2016): is the map's maximum on the object (`pointing_game`);
- an open-vocabulary p-mIoU (LeGrad on OpenImages V7): per prompt, the IoU of the binarized map with that
  prompt's own mask, averaged over prompts (`prompt_miou`);
- perturbation tests (Chefer et al. 2021, Sec. 4.2): remove the most (positive) or least (negative) relevant
  patches, 10% to 90% of them, re-run the model and integrate its score over the removed fraction
  (`perturbed_images`, `perturbation_auc`).

Example:
    >>> import numpy as np
    >>> mask = np.zeros((4, 4), dtype=bool); mask[:2, :2] = True
    >>> mean_iou(mask.astype(float), mask), pointing_game(mask.astype(float), mask)
    (1.0, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "PERTURBATION_FRACTIONS",
    "SegmentationCounts",
    "SegmentationMetrics",
    "average_precision",
    "binarize",
    "foreground_iou",
    "mean_iou",
    "patch_order",
    "perturbation_auc",
    "perturbation_curve",
    "perturbed_images",
    "pixel_accuracy",
    "pointing_game",
    "prompt_miou",
    "segmentation_average_precision",
    "segmentation_counts",
]

ArrayLike = np.ndarray | torch.Tensor
Threshold = float | str

#: Fractions of patches removed in the perturbation tests: the unperturbed image, then 10%, 20%, ..., 90%.
PERTURBATION_FRACTIONS: tuple[float, ...] = tuple(step / 10 for step in range(10))


# --- inputs ------------------------------------------------------------------------------------------------------
def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy() if values.is_floating_point() else values.detach().cpu().numpy()
    return np.asarray(values)


def _as_heatmap(heatmap: ArrayLike, name: str = "heatmap") -> np.ndarray:
    values = _to_numpy(heatmap).astype(np.float64, copy=False)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D map [height, width], got shape {values.shape}.")
    if not np.isfinite(values).all():
        raise ValueError(f"`{name}` holds NaN or inf values.")
    return values


def _as_mask(mask: ArrayLike, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    values = _to_numpy(mask)
    if values.shape != shape:
        raise ValueError(f"`{name}` has shape {values.shape} but the map has {shape}; they must be the same size.")
    return values.astype(bool, copy=False)


def binarize(heatmap: ArrayLike, threshold: Threshold = 0.5) -> np.ndarray:
    """The foreground of a map: bool [height, width], True where `heatmap > threshold`.

    Args:
        heatmap: float [height, width] map in [0, 1].
        threshold: a number (0.5, as in the LeGrad paper's ImageNet-Segmentation numbers), or "mean" for each map's
            own mean value, the threshold of Chefer et al.'s released `imagenet_seg_eval.py`.
    """
    values = _as_heatmap(heatmap)
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ValueError(f"`threshold` must be a number or 'mean', got {threshold!r}.")
        return values > values.mean()
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"`threshold` must be a number or 'mean', got {type(threshold).__name__}.")
    return values > float(threshold)


# --- segmentation ------------------------------------------------------------------------------------------------
@dataclass
class SegmentationCounts:
    """Pixel counts of one binarized map against its mask (or of a whole dataset: counts add up).

    Attributes:
        correct: pixels whose predicted class (foreground/background) equals the mask's.
        labeled: all pixels.
        intersection: [background, foreground] pixels predicted AND labeled as that class.
        union: [background, foreground] pixels predicted OR labeled as that class.
    """

    correct: int = 0
    labeled: int = 0
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))

    def __add__(self, other: SegmentationCounts) -> SegmentationCounts:
        return SegmentationCounts(
            correct=self.correct + other.correct,
            labeled=self.labeled + other.labeled,
            intersection=self.intersection + other.intersection,
            union=self.union + other.union,
        )

    @property
    def pixel_accuracy(self) -> float:
        """correct / labeled (0 for no pixels)."""
        return self.correct / self.labeled if self.labeled else 0.0

    @property
    def class_iou(self) -> np.ndarray:
        """[background IoU, foreground IoU]; a class absent from both prediction and mask has IoU 1 (they agree)."""
        return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), 1.0)

    @property
    def mean_iou(self) -> float:
        """The mean of the background and foreground IoU."""
        return float(self.class_iou.mean())


def segmentation_counts(heatmap: ArrayLike, mask: ArrayLike, threshold: Threshold = 0.5) -> SegmentationCounts:
    """Pixel counts of `binarize(heatmap, threshold)` against `mask` (see `SegmentationCounts`)."""
    predicted = binarize(heatmap, threshold)
    truth = _as_mask(mask, predicted.shape)
    intersection = np.array([(~predicted & ~truth).sum(), (predicted & truth).sum()], dtype=np.int64)
    union = np.array([(~predicted | ~truth).sum(), (predicted | truth).sum()], dtype=np.int64)
    return SegmentationCounts(
        correct=int(intersection.sum()), labeled=int(truth.size), intersection=intersection, union=union
    )


def pixel_accuracy(heatmap: ArrayLike, mask: ArrayLike, threshold: Threshold = 0.5) -> float:
    """Fraction of pixels whose binarized class (map > threshold: foreground) matches the mask.

    ImageNet-Segmentation protocol (Chefer et al. 2021, `batch_pix_accuracy`); over a dataset the counts are summed
    before dividing (`SegmentationMetrics`).
    """
    return segmentation_counts(heatmap, mask, threshold).pixel_accuracy


def mean_iou(heatmap: ArrayLike, mask: ArrayLike, threshold: Threshold = 0.5) -> float:
    """mIoU of the binarized map over the TWO classes, foreground and background.

    mIoU = (IoU_fg + IoU_bg) / 2 with IoU_c = |pred_c & mask_c| / |pred_c | mask_c| and pred_fg = map > threshold,
    as in Chefer et al.'s ImageNet-Segmentation evaluation (`batch_intersection_union` with 2 classes). Over a
    dataset, intersections and unions are summed per class before dividing (`SegmentationMetrics`). A perfect map
    scores 1; its inverse (foreground and background swapped) scores 0.
    """
    return segmentation_counts(heatmap, mask, threshold).mean_iou


def foreground_iou(heatmap: ArrayLike, mask: ArrayLike, threshold: Threshold = 0.5) -> float:
    """IoU of the binarized map's foreground with the mask: |pred & mask| / |pred | mask| (1 when both are empty)."""
    return float(segmentation_counts(heatmap, mask, threshold).class_iou[1])


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision of a ranking: sum over thresholds of (R_n - R_(n-1)) * P_n.

    The thresholds are the distinct score values in decreasing order (tied scores enter together), P_n and R_n the
    precision and recall of "score >= threshold n": the step-wise definition of scikit-learn's
    `average_precision_score`, which Chefer et al.'s `get_ap_scores` calls. Without any positive label the AP is
    undefined; it is reported as 0, as `np.nan_to_num` does in their script.

    Args:
        scores: float scores of any shape.
        labels: bool labels of the same shape (True = positive).
    """
    values = _to_numpy(scores).astype(np.float64, copy=False).reshape(-1)
    truth = _to_numpy(labels).astype(bool, copy=False).reshape(-1)
    if values.shape != truth.shape:
        raise ValueError(f"`scores` ({values.size} values) and `labels` ({truth.size}) must have the same size.")
    if not np.isfinite(values).all():
        raise ValueError("`scores` holds NaN or inf values.")
    positives = int(truth.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-values, kind="stable")
    values, truth = values[order], truth[order]
    last_of_each_value = np.r_[np.flatnonzero(np.diff(values)), values.size - 1]
    true_positives = np.cumsum(truth)[last_of_each_value]
    precision = true_positives / (last_of_each_value + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def segmentation_average_precision(heatmap: ArrayLike, mask: ArrayLike, foreground_only: bool = False) -> float:
    """AP of the pixel scores against the mask, as ImageNet-Segmentation's "mAP" column computes it per image.

    Chefer et al.'s `get_ap_scores` ranks the 2 * H * W entries of the two-channel prediction [1 - heatmap,
    heatmap] against the one-hot mask [background, foreground]: the AP of background and foreground pixels pooled.
    The dataset's mAP is the mean of these per-image values. `foreground_only=True` gives the plain AP of
    `heatmap` against `mask`.
    """
    values = _as_heatmap(heatmap)
    truth = _as_mask(mask, values.shape)
    if foreground_only:
        return average_precision(values, truth)
    return average_precision(np.concatenate([1.0 - values, values]), np.concatenate([~truth, truth]))


class SegmentationMetrics:
    """Dataset-level segmentation scores, accumulated as Chefer et al.'s ImageNet-Segmentation script does.

    Pixel accuracy and mIoU sum the counts of every image before dividing (a large object weighs more than a small
    one); mAP (Chefer et al.'s two-channel AP), foreground AP and p-mIoU (mean foreground IoU) are means of
    per-image values. With small objects, the background dominates pixel accuracy, mIoU and mAP: a map that marks
    nothing as foreground already scores well there; foreground AP and p-mIoU are not so forgiving.

    Args:
        threshold: binarization threshold of the maps (see `binarize`).

    Example:
        >>> metrics = SegmentationMetrics()
        >>> for heatmap, mask in pairs:
        ...     metrics.add(heatmap, mask)
        >>> metrics.result()  # {"pixel_acc": ..., "miou": ..., "map": ..., "fg_ap": ..., "p_miou": ...}
    """

    def __init__(self, threshold: Threshold = 0.5) -> None:
        self.threshold = threshold
        self.counts = SegmentationCounts()
        self.per_image: list[dict[str, float]] = []

    def add(self, heatmap: ArrayLike, mask: ArrayLike) -> dict[str, float]:
        """Score one map; returns its own values {"pixel_acc", "miou", "ap", "fg_ap", "foreground_iou"}."""
        counts = segmentation_counts(heatmap, mask, self.threshold)
        self.counts = self.counts + counts
        values = {
            "pixel_acc": counts.pixel_accuracy,
            "miou": counts.mean_iou,
            "ap": segmentation_average_precision(heatmap, mask),
            "fg_ap": segmentation_average_precision(heatmap, mask, foreground_only=True),
            "foreground_iou": float(counts.class_iou[1]),
        }
        self.per_image.append(values)
        return values

    def result(self) -> dict[str, float]:
        """{"pixel_acc", "miou", "map", "fg_ap", "p_miou"} over everything added (NaN before the first `add`)."""
        if not self.per_image:
            return {key: float("nan") for key in ("pixel_acc", "miou", "map", "fg_ap", "p_miou")}

        def mean(key: str) -> float:
            return float(np.mean([values[key] for values in self.per_image]))

        return {
            "pixel_acc": self.counts.pixel_accuracy,
            "miou": self.counts.mean_iou,
            "map": mean("ap"),
            "fg_ap": mean("fg_ap"),
            "p_miou": mean("foreground_iou"),
        }


# --- pointing game and open vocabulary ---------------------------------------------------------------------------
def pointing_game(heatmap: ArrayLike, mask: ArrayLike, tolerance: float = 0.0) -> bool:
    """The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", 2016) for one map.

    A hit when the map's maximum lies on the object: the pixel of the (first, in row-major order) maximum is in the
    mask, or, with `tolerance` > 0, within `tolerance` pixels (Euclidean distance between pixel indices) of a mask
    pixel; Zhang et al. use 15 pixels at ImageNet resolution. A constant map points at its first pixel. The score
    of a method is its hit rate over all (image, prompt) pairs.
    """
    values = _as_heatmap(heatmap)
    truth = _as_mask(mask, values.shape)
    if tolerance < 0:
        raise ValueError(f"`tolerance` must be >= 0 pixels, got {tolerance}.")
    row, column = np.unravel_index(int(np.argmax(values)), values.shape)
    if truth[row, column]:
        return True
    if tolerance == 0 or not truth.any():
        return False
    rows, columns = np.nonzero(truth)
    return bool(((rows - row) ** 2 + (columns - column) ** 2).min() <= tolerance**2)


def prompt_miou(
    heatmaps: Sequence[ArrayLike] | ArrayLike, masks: Sequence[ArrayLike] | ArrayLike, threshold: Threshold = 0.5
) -> float:
    """Open-vocabulary p-mIoU of one image: the mean over prompts of each binarized map's IoU with its own mask.

    For prompt k: IoU_k = |(map_k > threshold) & mask_k| / |(map_k > threshold) | mask_k|; the result is the mean
    of IoU_k over the K prompts. This is the LeGrad paper's OpenImages V7 metric with full masks in place of the
    point labels; a prompt whose map lights up another prompt's object scores 0 for it.

    Args:
        heatmaps: [prompts, height, width] maps in [0, 1] (or a sequence of [height, width] maps).
        masks: [prompts, height, width] bool masks, mask k for prompt k.
        threshold: see `binarize`.
    """
    heatmaps, masks = list(heatmaps), list(masks)
    if len(heatmaps) != len(masks) or not heatmaps:
        raise ValueError(
            f"need one mask per map and at least one map, got {len(heatmaps)} maps and {len(masks)} masks."
        )
    return float(np.mean([foreground_iou(h, m, threshold) for h, m in zip(heatmaps, masks, strict=True)]))


# --- perturbation ------------------------------------------------------------------------------------------------
def patch_order(grid_map: ArrayLike, most_relevant_first: bool = True) -> np.ndarray:
    """Flat (row-major) patch indices of a [h, w] grid map sorted by relevance; ties keep row-major order."""
    values = _as_heatmap(grid_map, "grid_map").reshape(-1)
    return np.argsort(-values if most_relevant_first else values, kind="stable")


def perturbed_images(
    pixel_values: torch.Tensor,
    grid_map: ArrayLike,
    most_relevant_first: bool,
    fractions: Sequence[float] = PERTURBATION_FRACTIONS,
) -> torch.Tensor:
    """The image with growing fractions of its patches removed, most (or least) relevant first.

    For fraction f, the first floor(f * P) of the P patches in `patch_order(grid_map, most_relevant_first)` are set
    to 0 in the model's *normalized* pixel space, i.e. to the processor's mean colour (`image_mean`), as Chefer et
    al.'s perturbation script zeroes normalized inputs. Patch (i, j) covers pixel rows i*ph:(i+1)*ph and columns
    j*pw:(j+1)*pw with ph = height // h, pw = width // w (the model's patch size for processed images).

    Args:
        pixel_values: float [channels, height, width], one processed image.
        grid_map: [h, w] relevance per patch (e.g. `LeGradOutput.grid_maps[b, k]`).
        most_relevant_first: True for the positive perturbation test, False for the negative one.
        fractions: removed fractions in [0, 1).

    Returns:
        [fractions, channels, height, width], a copy per fraction.
    """
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 3:
        raise ValueError("`pixel_values` must be one image as a tensor [channels, height, width].")
    values = _as_heatmap(grid_map, "grid_map")
    grid_h, grid_w = values.shape
    _, height, width = pixel_values.shape
    patch_h, patch_w = height // grid_h, width // grid_w
    if patch_h < 1 or patch_w < 1:
        raise ValueError(f"a {grid_h}x{grid_w} grid does not fit a {height}x{width} image.")
    order = patch_order(values, most_relevant_first)
    images = pixel_values.unsqueeze(0).repeat(len(fractions), 1, 1, 1)
    for step, fraction in enumerate(fractions):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"perturbation fractions must be in [0, 1), got {fraction}.")
        removed = order[: int(fraction * order.size + 1e-9)]
        for index in removed.tolist():
            row, column = divmod(index, grid_w)
            images[step, :, row * patch_h : (row + 1) * patch_h, column * patch_w : (column + 1) * patch_w] = 0.0
    return images


def perturbation_auc(scores: ArrayLike, fractions: Sequence[float] = PERTURBATION_FRACTIONS) -> float:
    """Area under the curve score(fraction removed), by the trapezoid rule over `fractions` (0 to 0.9 by default).

    The x axis spans 0.9, so a score that stays at s gives 0.9 * s. Positive perturbation (most relevant patches
    removed first): a faithful map makes the score drop fast, LOWER is better. Negative perturbation (least relevant
    first): the score should hold, HIGHER is better.
    """
    values = _to_numpy(scores).astype(np.float64, copy=False).reshape(-1)
    x = np.asarray(fractions, dtype=np.float64)
    if values.shape != x.shape:
        raise ValueError(f"need one score per fraction: {values.size} scores for {x.size} fractions.")
    return float(np.sum(np.diff(x) * (values[1:] + values[:-1]) / 2.0))


def perturbation_curve(
    score: Callable[[torch.Tensor], torch.Tensor],
    pixel_values: torch.Tensor,
    grid_map: ArrayLike,
    most_relevant_first: bool,
    fractions: Sequence[float] = PERTURBATION_FRACTIONS,
) -> np.ndarray:
    """The model's score for each fraction of removed patches (see `perturbed_images`).

    Args:
        score: maps a batch of images [fractions, channels, height, width] to the model's score [fractions] for the
            explained prompt or class (e.g. its logit).
        pixel_values, grid_map, most_relevant_first, fractions: as in `perturbed_images`.

    Returns:
        float64 [fractions]; `perturbation_auc` integrates it.
    """
    images = perturbed_images(pixel_values, grid_map, most_relevant_first, fractions)
    return _to_numpy(score(images)).astype(np.float64).reshape(-1)
