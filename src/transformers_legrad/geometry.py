"""From the processed image back to the original one.

Processors resize (and some center-crop) before the model sees an image, so a heatmap lives on the processed
image. To draw it over the picture the user gave, the heatmap is mapped onto the region of the original image that
the processed image shows; outside that region (cropped away) the map is zero. Only the processor's settings are
used, never the model family.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F


def processed_region(
    image_processor, width: int, height: int, size: dict | None = None, crop_size: dict | None = None
) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom), in original pixels, that the processed image shows.

    Args:
        image_processor: the image processor that produced the model's input.
        width, height: the original image's size.
        size, crop_size: the settings the processor was called with, where they override its own.
    """
    if callable(getattr(image_processor, "post_process_object_detection", None)):
        return _region_of_detection_processor(image_processor, width, height)
    size = size or getattr(image_processor, "size", None) or {}
    resized_width, resized_height = float(width), float(height)
    if getattr(image_processor, "do_resize", True):
        if "shortest_edge" in size:
            short, long = sorted((width, height))
            new_short = size["shortest_edge"]
            new_long = int(new_short * long / short)
            resized_width, resized_height = (new_short, new_long) if width <= height else (new_long, new_short)
        elif "height" in size and "width" in size:
            resized_width, resized_height = float(size["width"]), float(size["height"])
    left, top, right, bottom = 0.0, 0.0, resized_width, resized_height
    crop_size = crop_size or getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop_size:
        crop_height, crop_width = crop_size["height"], crop_size["width"]
        top = max(0.0, float(int((resized_height - crop_height) / 2)))
        left = max(0.0, float(int((resized_width - crop_width) / 2)))
        bottom = min(resized_height, top + crop_height)
        right = min(resized_width, left + crop_width)
    scale_x, scale_y = width / resized_width, height / resized_height
    return left * scale_x, top * scale_y, right * scale_x, bottom * scale_y


def _region_of_detection_processor(image_processor, width: int, height: int) -> tuple[float, float, float, float]:
    """A detector's processor maps its boxes back with `post_process_object_detection`: the region the processed
    image shows is where that puts the box covering all of it (OWLv2's, which pads the image to a square before
    resizing, puts it past the image's bottom or right edge)."""
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    left, top, right, bottom = detector_boxes_on_original(image_processor, whole, (height, width))[0].tolist()
    return left, top, right, bottom


def detector_boxes_on_original(
    image_processor, center_boxes: torch.Tensor, original_size: tuple[int, int]
) -> torch.Tensor:
    """Boxes of the processed image, relative (center x, center y, width, height) [boxes, 4], in the original
    image's pixels as float32 (xmin, ymin, xmax, ymax), mapped by the detector processor's own
    `post_process_object_detection` (as its `zero-shot-object-detection` pipeline maps them)."""
    outputs = SimpleNamespace(logits=torch.zeros(1, len(center_boxes), 1), pred_boxes=center_boxes.float()[None])
    result = image_processor.post_process_object_detection(
        outputs, threshold=-1.0, target_sizes=torch.tensor([original_size])
    )[0]
    return result["boxes"].float()


def heatmap_on_original(
    heatmap: torch.Tensor, region: tuple[float, float, float, float], width: int, height: int
) -> torch.Tensor:
    """Place a processed-image heatmap [H, W] on the original image: float32 [height, width], 0 outside `region`.

    A region that extends past the image (a processor that padded it) is filled by the whole heatmap, and only
    the part over the image is kept.
    """
    left, top, right, bottom = (round(v) for v in region)
    left, top = max(0, left), max(0, top)
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    resized = F.interpolate(
        heatmap.float()[None, None], size=(bottom - top, right - left), mode="bilinear", align_corners=False
    )[0, 0]
    canvas = torch.zeros(height, width, dtype=torch.float32)
    visible = resized[: min(height, bottom) - top, : min(width, right) - left]
    canvas[top : top + visible.shape[0], left : left + visible.shape[1]] = visible.clamp(0.0, 1.0)
    return canvas


def maps_on_original(
    heatmaps: torch.Tensor,
    processed_size: tuple[int, int],
    original_size: tuple[int, int],
    image_processor,
    size_kwargs: dict | None = None,
) -> torch.Tensor:
    """One image's heatmaps placed on the picture the user gave: float32 [prompts, height, width].

    The one way every caller (pipeline, data-set writer, benchmark) maps explanations back onto the original image.

    Args:
        heatmaps: [prompts, H, W], the image's maps at the processed size (padded to the batch's largest image for
            SigLIP 2: only the top-left `processed_size` is the image's own).
        processed_size: (height, width) of the processed image (`LeGradOutput.image_sizes[b]`).
        original_size: (width, height) of the original picture, as PIL gives `image.size`.
        image_processor: the processor that made the model's input.
        size_kwargs: the size settings it was called with (`LeGradExplainer.image_processor_kwargs(image_size)`).
    """
    size_kwargs = size_kwargs or {}
    width, height = original_size
    region = processed_region(image_processor, width, height, size_kwargs.get("size"), size_kwargs.get("crop_size"))
    processed_height, processed_width = (int(value) for value in processed_size)
    own = heatmaps[:, :processed_height, :processed_width]
    return torch.stack([heatmap_on_original(heatmap, region, width, height) for heatmap in own])
