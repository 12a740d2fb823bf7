"""Map math after the gradients: token relevance to patch grids, the SigLIP correction, normalization, upsampling,
and an audio map's relevance over time.

Every function takes the patch grid of each image, so images whose grids differ (SigLIP 2's NaFlex batches) share
one padded tensor: image b's map lies in [:h_b, :w_b] and is zero elsewhere, and padding never enters a min or max.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Where the normalized map of the null prompt exceeds this, SigLIP's correction zeroes the prompt's map.
CORRECTION_THRESHOLD = 0.8


def tokens_to_grids(
    relevance: torch.Tensor, num_prefix_tokens: int, grid_shapes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Drop the prefix tokens and lay each image's patch tokens out row-major on its grid.

    Args:
        relevance: [batch, prompts, layers, tokens].
        num_prefix_tokens: tokens before the patches (CLS, distillation token).
        grid_shapes: (h_b, w_b) per image.

    Returns:
        [batch, prompts, layers, max h, max w], zero outside each image's grid.
    """
    batch, prompts, layers, _ = relevance.shape
    max_h = max(h for h, _ in grid_shapes)
    max_w = max(w for _, w in grid_shapes)
    if all(shape == (max_h, max_w) for shape in grid_shapes):
        patches = relevance[..., num_prefix_tokens : num_prefix_tokens + max_h * max_w]
        return patches.reshape(batch, prompts, layers, max_h, max_w).contiguous()
    grids = relevance.new_zeros(batch, prompts, layers, max_h, max_w)
    for b, (h, w) in enumerate(grid_shapes):
        patches = relevance[b, ..., num_prefix_tokens : num_prefix_tokens + h * w]
        grids[b, ..., :h, :w] = patches.reshape(prompts, layers, h, w)
    return grids


def valid_mask(grid_shapes: Sequence[tuple[int, int]], device: torch.device | None = None) -> torch.Tensor:
    """bool [batch, 1, max h, max w]: True inside each image's own grid."""
    max_h = max(h for h, _ in grid_shapes)
    max_w = max(w for _, w in grid_shapes)
    mask = torch.zeros(len(grid_shapes), 1, max_h, max_w, dtype=torch.bool, device=device)
    for b, (h, w) in enumerate(grid_shapes):
        mask[b, :, :h, :w] = True
    return mask


def min_max(maps: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Min-max normalize each map [..., H, W] to [0, 1] over its valid region; a constant map becomes zeros.

    Args:
        maps: [batch, prompts, H, W].
        valid: optional bool mask broadcastable to `maps`; outside it the result is 0.
    """
    maps = maps.float()
    if valid is None:
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
    else:
        valid = valid.expand_as(maps)
        low = maps.masked_fill(~valid, float("inf")).amin(dim=(-2, -1), keepdim=True)
        high = maps.masked_fill(~valid, float("-inf")).amax(dim=(-2, -1), keepdim=True)
    span = high - low
    normalized = torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    normalized = normalized.clamp_(0.0, 1.0)
    if valid is not None:
        normalized = normalized.masked_fill(~valid, 0.0)
    return normalized


def null_prompt_correction(
    grid_maps: torch.Tensor, null_grid_maps: torch.Tensor, grid_shapes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """SigLIP's correction from the authors' code: zero each map where the null prompt's normalized map > 0.8.

    Args:
        grid_maps: [batch, prompts, h, w] summed layer maps.
        null_grid_maps: [batch, 1, h, w] the same for the null prompt ("a photo of a").
        grid_shapes: (h_b, w_b) per image.
    """
    normalized_null = min_max(null_grid_maps, valid_mask(grid_shapes, null_grid_maps.device))
    return grid_maps.masked_fill(normalized_null > CORRECTION_THRESHOLD, 0.0)


def heatmaps_from_grids(
    grid_maps: torch.Tensor,
    grid_shapes: Sequence[tuple[int, int]],
    image_sizes: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """Upsample each grid map bilinearly to its image's processed size, then min-max normalize it.

    Args:
        grid_maps: [batch, prompts, max h, max w].
        grid_shapes: (h_b, w_b) per image.
        image_sizes: (H_b, W_b) processed pixel size per image.

    Returns:
        float32 [batch, prompts, max H, max W] in [0, 1], zero outside each image.
    """
    grid_maps = grid_maps.float()
    max_height = max(height for height, _ in image_sizes)
    max_width = max(width for _, width in image_sizes)
    uniform = len(set(grid_shapes)) == 1 and len(set(image_sizes)) == 1
    if uniform:
        upsampled = F.interpolate(grid_maps, size=(max_height, max_width), mode="bilinear", align_corners=False)
        return min_max(upsampled)
    heatmaps = grid_maps.new_zeros(grid_maps.shape[0], grid_maps.shape[1], max_height, max_width)
    for b, ((h, w), (height, width)) in enumerate(zip(grid_shapes, image_sizes, strict=True)):
        grid = grid_maps[b : b + 1, :, :h, :w]
        upsampled = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        heatmaps[b : b + 1, :, :height, :width] = min_max(upsampled)
    return heatmaps


def relevance_over_time(heatmaps: torch.Tensor) -> torch.Tensor:
    """When in a clip each target is: each spectrogram heatmap averaged over its frequency axis.

    Args:
        heatmaps: [batch, targets, mel bins, time frames] (an audio model's `LeGradOutput.heatmaps`, in [0, 1]).

    Returns:
        float32 [batch, targets, time frames] in [0, 1]; frame t's time is `LeGradOutput.frame_times[t]`.
    """
    if heatmaps.dim() != 4:
        raise ValueError(
            f"`heatmaps` must be [batch, targets, mel bins, time frames], got shape {tuple(heatmaps.shape)}."
        )
    return heatmaps.float().mean(dim=-2)
