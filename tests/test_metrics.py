"""Evaluation metrics on hand-computable maps and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformers_legrad.evaluation import metrics


@pytest.fixture()
def square():
    """An 8x8 mask with a 3x3 object (9 of 64 pixels)."""
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:5, 3:6] = True
    return mask


def test_perfect_map_scores_one_everywhere(square):
    perfect = square.astype(np.float32)
    assert metrics.mean_iou(perfect, square) == 1.0
    assert metrics.pixel_accuracy(perfect, square) == 1.0
    assert metrics.foreground_iou(perfect, square) == 1.0
    assert metrics.segmentation_average_precision(perfect, square) == 1.0
    assert metrics.segmentation_average_precision(perfect, square, foreground_only=True) == 1.0
    assert metrics.pointing_game(perfect, square)


def test_inverted_map(square):
    inverted = 1.0 - square.astype(np.float32)
    assert metrics.mean_iou(inverted, square) == 0.0
    assert metrics.pixel_accuracy(inverted, square) == 0.0
    # Foreground AP: every positive ranks after every negative, so AP = precision at full recall = 9/64.
    assert metrics.segmentation_average_precision(inverted, square, foreground_only=True) == pytest.approx(9 / 64)
    # Chefer's two-channel AP: all 64 entries scored 1 are wrong, all 64 scored 0 are right: AP = 64/128.
    assert metrics.segmentation_average_precision(inverted, square) == pytest.approx(0.5)
    assert not metrics.pointing_game(inverted, square)


def test_two_by_two_by_hand():
    heatmap = np.array([[0.9, 0.6], [0.4, 0.1]])
    mask = np.array([[True, False], [False, False]])
    counts = metrics.segmentation_counts(heatmap, mask)  # predicted foreground: the top row
    assert counts.correct == 3 and counts.labeled == 4
    assert counts.intersection.tolist() == [2, 1] and counts.union.tolist() == [3, 2]
    assert metrics.mean_iou(heatmap, mask) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics.pixel_accuracy(heatmap, mask) == 0.75
    assert metrics.foreground_iou(heatmap, mask) == 0.5


def test_threshold_options():
    heatmap = np.array([[0.0, 0.2], [0.3, 0.1]])
    assert metrics.binarize(heatmap).tolist() == [[False, False], [False, False]]
    assert metrics.binarize(heatmap, "mean").tolist() == [[False, True], [True, False]]  # mean 0.15
    assert metrics.binarize(heatmap, 0.1).tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="'mean'"):
        metrics.binarize(heatmap, "median")
    with pytest.raises(TypeError):
        metrics.binarize(heatmap, True)


def test_average_precision_by_hand():
    # Ranking 1, 0, 1, 0: precision 1 at recall 0.5, then 2/3 at recall 1.
    assert metrics.average_precision([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # Ties enter together: the two 0.5 scores form one threshold with precision 1/2.
    assert metrics.average_precision([0.5, 0.5, 0.1], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert metrics.average_precision([0.3, 0.2, 0.1], [1, 1, 0]) == 1.0  # a perfect ranking
    assert metrics.average_precision([0.3, 0.2], [0, 0]) == 0.0  # no positive: reported as 0
    assert metrics.average_precision(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0


def test_dataset_accumulation_sums_counts_before_dividing(square):
    perfect = square.astype(np.float32)
    empty_map = np.zeros((8, 8))
    accumulator = metrics.SegmentationMetrics()
    first = accumulator.add(perfect, square)
    second = accumulator.add(empty_map, square)
    assert first["miou"] == 1.0 and first["ap"] == first["fg_ap"] == 1.0 and first["foreground_iou"] == 1.0
    assert second["foreground_iou"] == 0.0
    result = accumulator.result()
    # Background: 55 + 55 right of 55 + 64 predicted-or-true; foreground: 9 of 9 + 9.
    assert result["miou"] == pytest.approx((110 / 119 + 9 / 18) / 2)
    assert result["pixel_acc"] == pytest.approx((64 + 55) / 128)
    assert result["p_miou"] == pytest.approx(0.5)
    assert result["map"] == pytest.approx((1.0 + second["ap"]) / 2)
    assert result["fg_ap"] == pytest.approx((1.0 + 9 / 64) / 2)  # the all-zero map ranks every pixel alike
    assert set(metrics.SegmentationMetrics().result()) == {"pixel_acc", "miou", "map", "fg_ap", "p_miou"}


def test_pointing_game_and_tolerance(square):
    heatmap = np.zeros((8, 8))
    heatmap[2, 1] = 1.0  # two pixels left of the object's first column (3)
    assert not metrics.pointing_game(heatmap, square)
    assert not metrics.pointing_game(heatmap, square, tolerance=1.5)
    assert metrics.pointing_game(heatmap, square, tolerance=2)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(heatmap, square, tolerance=-1)


def test_pointing_game_on_a_small_map():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4, 2:4] = True
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[3, 3] = 1.0
    assert metrics.pointing_game(heatmap, mask)
    heatmap[3, 3], heatmap[6, 6] = 0.0, 1.0
    assert not metrics.pointing_game(heatmap, mask)
    assert metrics.pointing_game(heatmap, mask, tolerance=4.5)
    with pytest.raises(ValueError, match="same size"):
        metrics.pointing_game(heatmap, mask[:4])


def test_prompt_miou(square):
    other = np.zeros_like(square)
    other[6:, :2] = True
    maps = [square.astype(float), square.astype(float)]  # the second prompt's map lights up the first object
    assert metrics.prompt_miou(maps, [square, other]) == pytest.approx(0.5)
    assert metrics.prompt_miou(np.stack([square, other]).astype(float), np.stack([square, other])) == 1.0
    with pytest.raises(ValueError, match="one mask per map"):
        metrics.prompt_miou(maps, [square])


def test_auc_of_a_linear_drop():
    fractions = metrics.PERTURBATION_FRACTIONS
    assert fractions == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    drop = [1.0 - f for f in fractions]
    assert metrics.perturbation_auc(drop) == pytest.approx(0.9 - 0.9**2 / 2)  # integral of 1 - f over [0, 0.9]
    assert metrics.perturbation_auc([2.0] * 10) == pytest.approx(1.8)
    with pytest.raises(ValueError, match="one score per fraction"):
        metrics.perturbation_auc([1.0, 0.5])


def test_perturbed_images_remove_patches_in_relevance_order():
    pixel_values = torch.ones(1, 4, 4)
    grid_map = np.array([[4.0, 3.0], [2.0, 1.0]])  # patches of 2x2 pixels, most relevant top-left
    fractions = (0.0, 0.25, 0.5, 0.75)
    positive = metrics.perturbed_images(pixel_values, grid_map, True, fractions)
    negative = metrics.perturbed_images(pixel_values, grid_map, False, fractions)
    assert positive.shape == (4, 1, 4, 4)
    assert positive[0].eq(1).all() and negative[0].eq(1).all()
    assert positive[1, 0, :2, :2].eq(0).all() and positive[1].sum() == 12
    assert positive[2, 0, :2].eq(0).all() and positive[2, 0, 2:].eq(1).all()
    assert negative[2, 0, 2:].eq(0).all() and negative[2, 0, :2].eq(1).all()
    assert negative[3, 0, :2, :2].eq(1).all() and negative[3].sum() == 4
    assert pixel_values.eq(1).all()  # the input is not modified


def test_perturbation_curve_with_a_linear_score():
    # 10 x 10 patches: removing a fraction f of them leaves exactly (1 - f) of the image's sum.
    pixel_values = torch.ones(3, 20, 20)
    grid_map = np.random.default_rng(1).random((10, 10))
    positive = metrics.perturbation_curve(lambda images: images.sum(dim=(1, 2, 3)), pixel_values, grid_map, True)
    expected = [1200.0 * (1 - f) for f in metrics.PERTURBATION_FRACTIONS]
    assert positive == pytest.approx(expected)
    assert metrics.perturbation_auc(positive) == pytest.approx(1200.0 * 0.495)


def test_perturbation_ranks_by_relevance():
    # A "model" that only looks at the top-left patch: a map that ranks it first kills the score at once.
    pixel_values = torch.ones(1, 4, 4)
    grid_map = np.array([[1.0, 0.0], [0.0, 0.0]])

    def score(images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0, 0]

    fractions = (0.0, 0.25, 0.5, 0.75)
    assert metrics.perturbation_curve(score, pixel_values, grid_map, True, fractions).tolist() == [1, 0, 0, 0]
    assert metrics.perturbation_curve(score, pixel_values, grid_map, False, fractions).tolist() == [1, 1, 1, 1]


def test_ties_keep_row_major_order():
    assert metrics.patch_order(np.zeros((2, 2))).tolist() == [0, 1, 2, 3]
    assert metrics.patch_order(np.array([[1.0, 2.0], [2.0, 0.0]])).tolist() == [1, 2, 0, 3]
    assert metrics.patch_order(np.array([[1.0, 2.0], [2.0, 0.0]]), most_relevant_first=False).tolist() == [3, 0, 1, 2]


def test_torch_inputs_and_input_errors(square):
    heatmap = torch.from_numpy(square.astype(np.float32))
    assert metrics.mean_iou(heatmap, torch.from_numpy(square)) == 1.0
    with pytest.raises(ValueError, match="same size"):
        metrics.mean_iou(np.zeros((8, 8)), np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        metrics.mean_iou(np.full((8, 8), np.nan), square)
    with pytest.raises(ValueError, match="2-D"):
        metrics.mean_iou(np.zeros((1, 8, 8)), square)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        metrics.perturbed_images(torch.ones(1, 4, 4), np.ones((2, 2)), True, (0.0, 1.0))
