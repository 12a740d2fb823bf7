"""Map math after the gradients: token relevance to patch grids, the SigLIP correction, normalization, upsampling
(stretched, or placed at the patch centres an adapter declares), and an audio or video map's relevance over time.

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
#: Per token axis, (stride, patch size) in input units (pixels, frames, mel bins): token i's patch covers input
#: positions stride * i .. stride * i + patch - 1, centred at stride * i + (patch - 1) / 2.
PatchGeometry = tuple[tuple[int, int], ...]


def grid_rank(grid_shapes: Sequence[Shape]) -> int:
    """The number of token axes the grids share (2 for images, 3 for videos); a ValueError if they differ."""
    ranks = {len(shape) for shape in grid_shapes}
    if len(ranks) != 1:
        raise ValueError(f"the grids of one batch must have one rank, got shapes {list(grid_shapes)}.")
    rank = ranks.pop()
    if rank not in UPSAMPLING_MODES:
        raise ValueError(
            f"grids of {rank} token axes cannot be upsampled (1 to 3 axes: a sequence, an image's or a spectrogram's "
            f"(h, w), a video's (t, h, w)); got shapes {list(grid_shapes)}."
        )
    return rank


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
    patch_geometry: PatchGeometry | None = None,
) -> torch.Tensor:
    """Upsample each grid map along its input's own axes to its processed size, then min-max normalize it.

    Bilinear for an image's (h, w) grid, trilinear for a video's (t, h, w) tubelet grid (frames too): the grid is
    stretched over the input, which puts each token at its patch's centre when the patches tile the input. When the
    adapter declares a `patch_geometry` whose patches do not tile it (AST's overlapping spectrogram patches, a clip
    whose last frames fill no tubelet), the map is instead interpolated linearly, axis by axis, between the patch
    centres, so it equals the token's value at its patch's centre, and held constant beyond the first and last.

    Args:
        grid_maps: [batch, prompts, *max grid] ([batch, prompts, max h, max w] for images).
        grid_shapes: per input, its token axes: (h_b, w_b), or (t_b, h_b, w_b).
        image_sizes: per input, its processed size along the same axes: (H_b, W_b) pixels, or (frames_b, H_b, W_b).
        patch_geometry: per token axis, (stride, patch size) in input units; None: the grid tiles the input.

    Returns:
        float32 [batch, prompts, *max size] ([batch, prompts, max H, max W]; videos [batch, prompts, max frames,
        max H, max W]) in [0, 1], zero outside each input.
    """
    rank = grid_rank(grid_shapes)
    if grid_rank(image_sizes) != rank:
        raise ValueError(f"grids {list(grid_shapes)} and sizes {list(image_sizes)} must have the same axes.")
    if patch_geometry is not None and len(patch_geometry) != rank:
        raise ValueError(f"`patch_geometry` {patch_geometry} must give (stride, patch) for each of the {rank} axes.")
    grid_maps = grid_maps.float()
    largest = _max_shape(image_sizes)
    uniform = len(set(grid_shapes)) == 1 and len(set(image_sizes)) == 1
    if uniform:
        upsampled = _upsample(grid_maps, grid_shapes[0], largest, patch_geometry)
        return min_max(upsampled, rank=rank)
    heatmaps = grid_maps.new_zeros(grid_maps.shape[0], grid_maps.shape[1], *largest)
    for b, (shape, size) in enumerate(zip(grid_shapes, image_sizes, strict=True)):
        grid = grid_maps[(slice(b, b + 1), slice(None), *_region(shape))]
        upsampled = _upsample(grid, tuple(shape), tuple(size), patch_geometry)
        heatmaps[(slice(b, b + 1), slice(None), *_region(size))] = min_max(upsampled, rank=rank)
    return heatmaps


def _upsample(grid: torch.Tensor, shape: Shape, size: Shape, patch_geometry: PatchGeometry | None) -> torch.Tensor:
    """[batch, prompts, *shape] -> [batch, prompts, *size]: stretched when the patches tile the input, else placed."""
    tiles = patch_geometry is None or all(
        stride == patch and length == tokens * stride
        for (stride, patch), tokens, length in zip(patch_geometry, shape, size, strict=True)
    )
    if tiles:
        return F.interpolate(grid, size=size, mode=UPSAMPLING_MODES[len(shape)], align_corners=False)
    for axis, ((stride, patch), tokens, length) in enumerate(zip(patch_geometry, shape, size, strict=True)):
        weights = patch_centre_weights(tokens, length, stride, patch).to(grid.device)
        grid = torch.movedim(torch.movedim(grid, 2 + axis, -1) @ weights.T, -1, 2 + axis)
    return grid


def patch_centre_weights(tokens: int, length: int, stride: int, patch: int) -> torch.Tensor:
    """float32 [length, tokens]: linear interpolation between patch centres along one axis.

    Position x (0 .. length - 1) lies at u = (x - (patch - 1) / 2) / stride patches, clamped to [0, tokens - 1];
    its value is (1 - frac(u)) of patch floor(u) plus frac(u) of the next. With stride == patch and length ==
    tokens * stride these are `F.interpolate`'s linear weights (align_corners=False).
    """
    position = torch.arange(length, dtype=torch.float64)
    u = ((position - (patch - 1) / 2) / stride).clamp(0, tokens - 1)
    low = u.floor().long()
    high = (low + 1).clamp(max=tokens - 1)
    frac = u - low
    weights = torch.zeros(length, tokens, dtype=torch.float64)
    weights.index_put_((torch.arange(length), low), 1 - frac, accumulate=True)
    weights.index_put_((torch.arange(length), high), frac, accumulate=True)
    return weights.float()


#: Per modality whose maps have a time axis: the heatmap's rank and the axes averaged out, leaving time last.
TIME_AXES = {"audio": (4, (-2,)), "video": (5, (-2, -1))}


def relevance_over_time(heatmaps: torch.Tensor, modality: str = "audio") -> torch.Tensor:
    """When in a clip each target is: each heatmap averaged over all its axes but time.

    Args:
        heatmaps: `LeGradOutput.heatmaps` in [0, 1]: audio [batch, targets, mel bins, time frames] (averaged over
            the mel bins), video [batch, targets, frames, height, width] (averaged over each frame).
        modality: "audio" or "video", the inputs the maps are of (`LeGradOutput.modality`).

    Returns:
        float32 [batch, targets, time frames] (audio: frame t's time is `LeGradOutput.frame_times[t]`) or
        [batch, targets, frames] (video), in [0, 1].

    Raises:
        ValueError: another modality (an image map has no time axis), or heatmaps of the wrong rank for it.
    """
    if modality not in TIME_AXES:
        raise ValueError(
            f"relevance over time is for audio and video maps, which have a time axis; {modality} maps have none."
        )
    rank, axes = TIME_AXES[modality]
    if heatmaps.dim() != rank:
        layout = "mel bins, time frames" if modality == "audio" else "frames, height, width"
        raise ValueError(
            f"{modality} `heatmaps` must be [batch, targets, {layout}], got shape {tuple(heatmaps.shape)}."
        )
    return heatmaps.float().mean(dim=axes)
