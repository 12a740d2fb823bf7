"""The synthetic scene generator: deterministic, well-formed, and masks that are exactly the drawn objects."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from transformers_legrad.evaluation import synthetic


@pytest.fixture(scope="module")
def scenes():
    return synthetic.generate(200, seed=11)


def test_same_seed_same_scenes():
    first, second = synthetic.generate(20, seed=3), synthetic.generate(20, seed=3)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.labels == b.labels
        for obj_a, obj_b in zip(a.objects, b.objects, strict=True):
            assert np.array_equal(obj_a.mask, obj_b.mask)


def test_other_seed_other_scenes():
    a, b = synthetic.generate(5, seed=0), synthetic.generate(5, seed=1)
    assert any(not np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))


def test_a_prefix_of_a_longer_run():
    assert [s.labels for s in synthetic.generate(3, seed=5)] == [s.labels for s in synthetic.generate(8, seed=5)[:3]]


@pytest.mark.parametrize("size", [32, 64, 96])
def test_image_size_and_mode(size):
    for scene in synthetic.generate(5, seed=2, image_size=size):
        assert isinstance(scene.image, Image.Image)
        assert scene.image.mode == "RGB" and scene.image.size == (size, size)
        for obj in scene.objects:
            assert obj.mask.shape == (size, size) and obj.mask.dtype == bool


def test_counts_labels_and_vocabulary(scenes):
    counts = [len(scene.objects) for scene in scenes]
    assert min(counts) >= 1 and max(counts) <= 4
    assert set(counts) == {1, 2, 3, 4}
    seen_colours, seen_shapes = set(), set()
    for scene in scenes:
        assert len(set(scene.labels)) == len(scene.labels), "a caption must name exactly one object"
        for obj in scene.objects:
            assert obj.colour in synthetic.COLOURS and obj.shape in synthetic.SHAPES
            assert obj.label == f"{obj.colour} {obj.shape}" and obj.label in synthetic.LABELS
            assert obj.caption == f"a {obj.label}"
            seen_colours.add(obj.colour)
            seen_shapes.add(obj.shape)
    assert seen_colours == set(synthetic.COLOURS) and seen_shapes == set(synthetic.SHAPES)
    assert len(synthetic.COLOURS) >= 6 and len(synthetic.SHAPES) >= 5


def test_object_count_bounds():
    for scene in synthetic.generate(30, seed=4, min_objects=3, max_objects=3):
        assert 1 <= len(scene.objects) <= 3
    assert all(len(s.objects) == 1 for s in synthetic.generate(10, seed=4, max_objects=1))
    with pytest.raises(ValueError, match="min_objects"):
        synthetic.generate(1, min_objects=0)
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate(1, image_size=8)


def test_sizes_and_positions_vary(scenes):
    areas = [obj.area for scene in scenes for obj in scene.objects]
    centers = np.array([obj.center for scene in scenes for obj in scene.objects])
    assert min(areas) > 0 and max(areas) > 4 * min(areas)
    assert centers[:, 0].std() > 8 and centers[:, 1].std() > 8


def test_masks_are_the_drawn_object(scenes):
    """Inside its mask an object has its own colour (plus pixel noise), and nothing else."""
    for scene in scenes:
        pixels = np.asarray(scene.image, dtype=np.float32)
        for obj in scene.objects:
            assert obj.area >= 20
            inside = pixels[obj.mask]
            median = np.median(inside, axis=0)
            assert np.abs(median - np.asarray(synthetic.COLOURS[obj.colour])).max() < 32, obj.label
            # Its colour is the nearest nominal colour to what is drawn inside its mask ...
            distances = {name: np.linalg.norm(median - np.asarray(rgb)) for name, rgb in synthetic.COLOURS.items()}
            assert min(distances, key=distances.get) == obj.colour
            # ... and the mask covers one uniform colour: no background pixel inside.
            assert np.abs(inside - median).max(axis=1).max() < 45
            # The background just around the object is mostly not its colour: the mask is not too small.
            others = np.zeros_like(obj.mask)
            for other in scene.objects:
                if other is not obj:
                    others |= other.mask
            ring = _dilate(obj.mask) & ~obj.mask & ~others
            if ring.sum() >= 10:
                assert (np.abs(pixels[ring] - median).max(axis=1) < 30).mean() < 0.5, obj.label


def test_occlusion_leaves_the_visible_part(scenes):
    """Later objects hide earlier ones: each mask is its full shape minus the shapes drawn after it."""
    occluded = 0
    for scene in synthetic.generate(300, seed=10, min_objects=4):
        union = np.zeros_like(scene.objects[0].mask)
        for obj in reversed(scene.objects):
            assert np.array_equal(obj.mask, obj.full_mask & ~union)
            assert obj.area >= synthetic.MIN_VISIBLE_FRACTION * obj.full_mask.sum()
            occluded += bool((obj.full_mask & union).any())
            union |= obj.full_mask
        visible = np.stack([obj.mask for obj in scene.objects])
        assert visible.sum(0).max() <= 1, "visible masks are disjoint"
    assert occluded > 20


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def test_largest_object():
    scene = next(s for s in synthetic.generate(50, seed=12) if len(s.objects) >= 2)
    largest = max(scene.objects, key=lambda obj: obj.area)
    assert synthetic.largest_object(scene) is largest
    assert synthetic.largest_object(scene, margin=1e6) is None


def test_fast():
    start = time.perf_counter()
    synthetic.generate(1000, seed=0)
    assert time.perf_counter() - start < 10.0
