"""AUPRO and connected-region labelling against straightforward numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from anomaly_kernels.metrics import AUPRO, connected_components

# 8-connectivity inside each image of a (B, H, W) stack, never across images.
PER_IMAGE_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=int)
PER_IMAGE_8_CONNECTIVITY[1] = 1


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Per-threshold loop: FPR over normal pixels, mean overlap over scipy-labelled regions, trapezoid to the limit."""
    regions, normal = [], []
    for score_map, mask in zip(maps, masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        regions += [score_map[labels == region] for region in range(1, count + 1)]
        normal.append(score_map[mask == 0])
    normal = np.concatenate(normal)
    fpr, pro = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        fpr.append(np.mean(normal >= threshold))
        pro.append(np.mean([np.mean(region >= threshold) for region in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    inside = fpr <= fpr_limit
    area = np.trapezoid(pro[inside], fpr[inside])
    if not inside.all():
        after = int(np.argmin(inside))
        f0, f1, p0, p1 = fpr[after - 1], fpr[after], pro[after - 1], pro[after]
        pro_at_limit = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
        area += (fpr_limit - f0) * (p0 + pro_at_limit) / 2
    return float(area / fpr_limit)


def small_masks_and_maps(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """6 masks (12×12): several regions of different sizes (one touching diagonally), one empty mask."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 12, 12), dtype=np.int64)
    masks[0, 1:4, 1:5] = 1  # 12-pixel region
    masks[0, 8:10, 8:9] = 1  # 2-pixel region
    masks[1, 5, 5] = masks[1, 6, 6] = masks[1, 7, 7] = 1  # one region through diagonal neighbours
    masks[1, 0:2, 9:12] = 1
    masks[2, 2:10, 3] = 1
    masks[4, 10:12, 0:12] = 1
    masks[5, 0, 0] = 1  # single pixel
    # masks[3] has no region: an image without anomaly.
    maps = rng.normal(size=masks.shape) + 1.2 * masks * rng.uniform(0.0, 2.0, size=masks.shape)
    return np.round(maps, 1).astype(np.float32), masks  # rounding creates ties


@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_mode_equals_numpy_reference(seed, fpr_limit):
    maps, masks = small_masks_and_maps(seed)
    metric = AUPRO(fpr_limit=fpr_limit)
    # Batches of 2 with a channel dimension, as AnomalyModule passes them.
    for start in range(0, 6, 2):
        metric.update(torch.from_numpy(maps[start : start + 2, None]), torch.from_numpy(masks[start : start + 2, None]))
    assert float(metric.compute()) == pytest.approx(reference_aupro(maps, masks, fpr_limit), abs=1e-6)


def test_binned_mode_is_within_1e_3_of_exact():
    rng = np.random.default_rng(3)
    masks = np.zeros((8, 48, 48), dtype=np.int64)
    for image in range(1, 8):
        for _ in range(3):
            row, col, height, width = rng.integers(0, 40), rng.integers(0, 40), rng.integers(1, 8), rng.integers(1, 8)
            masks[image, row : row + height, col : col + width] = 1
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    exact, binned = AUPRO(), AUPRO(num_bins=10_000)
    for metric in (exact, binned):
        metric.update(torch.from_numpy(maps[:4]), torch.from_numpy(masks[:4]))
        metric.update(torch.from_numpy(maps[4:]), torch.from_numpy(masks[4:]))
    # Exact mode is checked against the numpy reference above; here binned against exact.
    assert float(binned.compute()) == pytest.approx(float(exact.compute()), abs=1e-3)
    assert 0.3 < float(exact.compute()) < 0.99


def test_hand_computed_curve():
    # One region (2 pixels: 0.9, 0.4), four normal pixels (0.8, 0.3, 0.2, 0.1). Curve points:
    # (0, 0) -> (0, .5) [t=.9] -> (.25, .5) [t=.8] -> (.25, 1) [t=.4] -> (.5, 1) [t=.3] -> ...
    # Area up to 0.3: 0.25 * 0.5 + 0.05 * 1 = 0.175; normalised 0.175 / 0.3.
    maps = torch.tensor([[[0.9, 0.8, 0.3], [0.4, 0.2, 0.1]]])
    masks = torch.tensor([[[1, 0, 0], [1, 0, 0]]])
    metric = AUPRO()
    metric.update(maps, masks)
    assert float(metric.compute()) == pytest.approx(0.175 / 0.3, abs=1e-6)


@pytest.mark.parametrize("num_bins", [None, 10_000])
def test_perfect_and_inverted_detectors(num_bins):
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, 2:4, 2:6] = 1
    masks[2, 0, 5:8, 0:2] = 1
    noise = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    perfect, inverted = AUPRO(num_bins=num_bins), AUPRO(num_bins=num_bins)
    perfect.update(noise + 2 * masks, masks)
    inverted.update(noise - 2 * masks, masks)
    assert float(perfect.compute()) == pytest.approx(1.0, abs=1e-6)
    assert float(inverted.compute()) == 0.0


def test_no_region_warns_and_returns_zero_and_inputs_are_kept():
    maps, masks = torch.rand(2, 1, 5, 5), torch.zeros(2, 1, 5, 5)
    maps_before, masks_before = maps.clone(), masks.clone()
    metric = AUPRO()
    metric.update(maps, masks)
    with pytest.warns(UserWarning, match="0 anomalous regions"):
        assert float(metric.compute()) == 0.0
    assert torch.equal(maps, maps_before) and torch.equal(masks, masks_before)


def test_merge_state_adds_regions_and_pixels():
    maps, masks = small_masks_and_maps(2)
    first, second, whole = AUPRO(num_bins=512), AUPRO(num_bins=512), AUPRO(num_bins=512)
    first.update(torch.from_numpy(maps[:3]), torch.from_numpy(masks[:3]))
    second.update(torch.from_numpy(maps[3:]), torch.from_numpy(masks[3:]))
    whole.update(torch.from_numpy(maps), torch.from_numpy(masks))
    first.merge_state(second)
    expected_regions = sum(ndimage.label(mask, structure=np.ones((3, 3), dtype=int))[1] for mask in masks)
    assert int(first.region_count) == int(whole.region_count) == expected_regions == 7
    assert float(first.compute()) == float(whole.compute())


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"fpr_limit must be in \(0, 1\]"):
        AUPRO(fpr_limit=0.0)
    with pytest.raises(TypeError, match="fpr_limit"):
        AUPRO(fpr_limit="0.3")
    metric = AUPRO()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) or \(B, H, W\)"):
        metric.update(torch.rand(4), torch.zeros(4))
    with pytest.raises(ValueError, match="same"):
        metric.update(torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metric.update(torch.rand(1, 4, 4), torch.full((1, 4, 4), 255))


# ---------------------------------------------------------------- connected regions


def assert_same_labels_as_scipy(masks: np.ndarray) -> None:
    labels, count = connected_components(torch.from_numpy(masks))
    expected, expected_count = ndimage.label(masks, structure=PER_IMAGE_8_CONNECTIVITY)
    assert count == expected_count
    assert np.array_equal(labels.numpy(), expected)  # same numbering: raster order of first pixels


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_connected_components_equal_scipy_on_random_masks(density):
    rng = np.random.default_rng(int(density * 100))
    assert_same_labels_as_scipy((rng.random((5, 23, 31)) < density).astype(np.uint8))


def square_spiral(size: int) -> np.ndarray:
    """A one-pixel-wide spiral walked inwards with one free pixel between turns: one long region."""
    grid = np.zeros((size, size), dtype=np.uint8)
    row, col, step_row, step_col = 0, 0, 0, 1
    grid[row, col] = 1

    def free(r: int, c: int) -> bool:
        return 0 <= r < size and 0 <= c < size and grid[r, c] == 0

    while True:
        for _ in range(2):  # go straight, else turn right once
            ahead, beyond = (row + step_row, col + step_col), (row + 2 * step_row, col + 2 * step_col)
            inside_beyond = 0 <= beyond[0] < size and 0 <= beyond[1] < size
            if free(*ahead) and not (inside_beyond and grid[beyond] == 1):
                row, col = ahead
                grid[row, col] = 1
                break
            step_row, step_col = step_col, -step_row
        else:
            return grid


def test_connected_components_of_a_spiral_and_edge_cases():
    spiral = square_spiral(41)
    assert spiral.sum() > 41 * 41 // 3
    assert_same_labels_as_scipy(spiral[None])
    assert_same_labels_as_scipy(np.zeros((2, 4, 4), dtype=np.uint8))
    assert_same_labels_as_scipy(np.ones((2, 4, 4), dtype=np.uint8))  # two images: two regions
    assert_same_labels_as_scipy(np.eye(6, dtype=np.uint8)[None])  # diagonal = one region
    with pytest.raises(ValueError, match=r"3-D \(B, H, W\)"):
        connected_components(torch.zeros(4, 4))
