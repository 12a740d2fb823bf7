"""Map math after the gradients: token relevance to patch grids, the SigLIP correction, normalization, upsampling,
and an audio map's relevance over time.

A grid is any tuple of token axes: (h, w) patches of an image, (t, h, w) tubelets of a video. Every function takes
the grid of each input, so inputs whose grids differ (SigLIP 2's NaFlex batches) share one padded tensor: input b's
map lies in [:h_b, :w_b] (or [:t_b, :h_b, :w_b]) and is zero elsewhere, and padding never enters a min or max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Where the normalized map of the null prompt exceeds this, SigLIP's correction zeroes the prompt's map.
CORRECTION_THRESHOLD = 0.8
#: How a grid of each rank is upsampled to its input's size (`F.interpolate`'s mode).
UPSAMPLING_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

Shape = tuple[int, ...]


def grid_rank(grid_shapes: Sequence[Shape]) -> int:
    """The number of token axes the grids share (2 for images, 3 for videos); a ValueError if they differ."""
    ranks = {len(shape) for shape in grid_shapes}
    if len(ranks) != 1:
        raise ValueError(f"the grids of one batch must have one rank, got shapes {list(grid_shapes)}.")
    return ranks.pop()


def _max_shape(shapes: Sequence[Shape]) -> Shape:
    return tuple(max(sizes) for sizes in zip(*shapes, strict=True))


def _region(shape: Shape) -> tuple[slice, ...]:
    return tuple(slice(0, size) for size in shape)


def tokens_to_grids(relevance: torch.Tensor, num_prefix_tokens: int, grid_shapes: Sequence[Shape]) -> torch.Tensor:
    """Drop the prefix tokens and lay each input's patch tokens out row-major on its grid.

    Args:
        relevance: [batch, prompts, layers, tokens].
        num_prefix_tokens: tokens before the patches (CLS, distillation token).
        grid_shapes: per input, its token axes: (h_b, w_b) for an image, (t_b, h_b, w_b) for a video.

    Returns:
        [batch, prompts, layers, *max grid] ([..., max h, max w] for images), zero outside each input's grid.
    """
    batch, prompts, layers, _ = relevance.shape
    grid_rank(grid_shapes)
    largest = _max_shape(grid_shapes)
    if all(tuple(shape) == largest for shape in grid_shapes):
        patches = relevance[..., num_prefix_tokens : num_prefix_tokens + math.prod(largest)]
        return patches.reshape(batch, prompts, layers, *largest).contiguous()
    grids = relevance.new_zeros(batch, prompts, layers, *largest)
    for b, shape in enumerate(grid_shapes):
        patches = relevance[b, ..., num_prefix_tokens : num_prefix_tokens + math.prod(shape)]
        grids[(b, Ellipsis, *_region(shape))] = patches.reshape(prompts, layers, *shape)
    return grids


def valid_mask(grid_shapes: Sequence[Shape], device: torch.device | None = None) -> torch.Tensor:
    """bool [batch, 1, *max grid] ([batch, 1, max h, max w] for images): True inside each input's own grid."""
    grid_rank(grid_shapes)
    mask = torch.zeros(len(grid_shapes), 1, *_max_shape(grid_shapes), dtype=torch.bool, device=device)
    for b, shape in enumerate(grid_shapes):
        mask[(b, slice(None), *_region(shape))] = True
    return mask


def min_max(maps: torch.Tensor, valid: torch.Tensor | None = None, rank: int = 2) -> torch.Tensor:
    """Min-max normalize each map over its last `rank` axes to [0, 1]; a constant map becomes zeros.

    Args:
        maps: [batch, prompts, H, W] (rank 2), or [batch, prompts, frames, H, W] (rank 3).
        valid: optional bool mask broadcastable to `maps`; the min and max are taken inside it, outside it the
            result is 0.
        rank: how many trailing axes one map spans.
    """
    maps = maps.float()
    axes = tuple(range(-rank, 0))
    if valid is None:
        low = maps.amin(dim=axes, keepdim=True)
        high = maps.amax(dim=axes, keepdim=True)
    else:
        valid = valid.expand_as(maps)
        low = maps.masked_fill(~valid, float("inf")).amin(dim=axes, keepdim=True)
        high = maps.masked_fill(~valid, float("-inf")).amax(dim=axes, keepdim=True)
    span = high - low
    normalized = torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    normalized = normalized.clamp_(0.0, 1.0)
    if valid is not None:
        normalized = normalized.masked_fill(~valid, 0.0)
    return normalized


def null_prompt_correction(
    grid_maps: torch.Tensor, null_grid_maps: torch.Tensor, grid_shapes: Sequence[Shape]
) -> torch.Tensor:
    """SigLIP's correction from the authors' code: zero each map where the null prompt's normalized map > 0.8.

    Args:
        grid_maps: [batch, prompts, *grid] summed layer maps ([batch, prompts, h, w] for images).
        null_grid_maps: [batch, 1, *grid] the same for the null prompt ("a photo of a").
        grid_shapes: per input, its token axes.
    """
    rank = grid_rank(grid_shapes)
    normalized_null = min_max(null_grid_maps, valid_mask(grid_shapes, null_grid_maps.device), rank)
    return grid_maps.masked_fill(normalized_null > CORRECTION_THRESHOLD, 0.0)


def heatmaps_from_grids(
    grid_maps: torch.Tensor,
    grid_shapes: Sequence[Shape],
    image_sizes: Sequence[Shape],
) -> torch.Tensor:
    """Upsample each grid map along its input's own axes to its processed size, then min-max normalize it.

    Bilinear for an image's (h, w) grid, trilinear for a video's (t, h, w) tubelet grid (frames too).

    Args:
        grid_maps: [batch, prompts, *max grid] ([batch, prompts, max h, max w] for images).
        grid_shapes: per input, its token axes: (h_b, w_b), or (t_b, h_b, w_b).
        image_sizes: per input, its processed size along the same axes: (H_b, W_b) pixels, or (frames_b, H_b, W_b).

    Returns:
        float32 [batch, prompts, *max size] ([batch, prompts, max H, max W]; videos [batch, prompts, max frames,
        max H, max W]) in [0, 1], zero outside each input.
    """
    rank = grid_rank(grid_shapes)
    if grid_rank(image_sizes) != rank:
        raise ValueError(f"grids {list(grid_shapes)} and sizes {list(image_sizes)} must have the same axes.")
    mode = UPSAMPLING_MODES[rank]
    grid_maps = grid_maps.float()
    largest = _max_shape(image_sizes)
    uniform = len(set(grid_shapes)) == 1 and len(set(image_sizes)) == 1
    if uniform:
        upsampled = F.interpolate(grid_maps, size=largest, mode=mode, align_corners=False)
        return min_max(upsampled, rank=rank)
    heatmaps = grid_maps.new_zeros(grid_maps.shape[0], grid_maps.shape[1], *largest)
    for b, (shape, size) in enumerate(zip(grid_shapes, image_sizes, strict=True)):
        grid = grid_maps[(slice(b, b + 1), slice(None), *_region(shape))]
        upsampled = F.interpolate(grid, size=tuple(size), mode=mode, align_corners=False)
        heatmaps[(slice(b, b + 1), slice(None), *_region(size))] = min_max(upsampled, rank=rank)
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
