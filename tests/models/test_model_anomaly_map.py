"""AnomalyMapGenerator against a numpy bilinear upsampling and scipy's Gaussian filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomaly_kernels.models import AnomalyMapGenerator
from anomaly_kernels.models.anomaly_map import blur_kernel_size


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array, pixel-centre aligned (source x = (i + 0.5) · in/out − 0.5)."""

    def axis_weights(size_in: int, size_out: int):
        source = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        source = np.clip(source, 0.0, None)
        low = np.minimum(np.floor(source).astype(int), size_in - 1)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, source - low

    rows_low, rows_high, row_frac = axis_weights(image.shape[0], height)
    cols_low, cols_high, col_frac = axis_weights(image.shape[1], width)
    top = image[rows_low][:, cols_low] * (1 - col_frac) + image[rows_low][:, cols_high] * col_frac
    bottom = image[rows_high][:, cols_low] * (1 - col_frac) + image[rows_high][:, cols_high] * col_frac
    return top * (1 - row_frac)[:, None] + bottom * row_frac[:, None]


def reference_maps(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(B, 1, h, w) → (B, 1, H, W): bilinear upsampling, then a Gaussian truncated at 4σ.

    scipy's "mirror" border (d c b | a b c d) is the reflection without repeating the edge.
    """
    out = np.empty((patch_scores.shape[0], 1, *size))
    for index, scores in enumerate(patch_scores[:, 0]):
        out[index, 0] = gaussian_filter(bilinear_resize(scores, *size), sigma=sigma, mode="mirror", truncate=4.0)
    return out


def test_kernel_size_covers_four_sigma():
    assert blur_kernel_size(4.0) == 33
    assert blur_kernel_size(1.0) == 9


@pytest.mark.parametrize("grid, size", [((8, 8), (64, 64)), ((7, 5), (56, 40)), ((16, 12), (48, 50))])
def test_maps_match_numpy_reference(grid, size):
    generator = torch.Generator().manual_seed(0)
    patch_scores = torch.rand(3, 1, *grid, generator=generator, dtype=torch.float64)
    maps = AnomalyMapGenerator(size)(patch_scores)
    assert maps.shape == (3, 1, *size) and maps.dtype == torch.float64
    np.testing.assert_allclose(maps.numpy(), reference_maps(patch_scores.numpy(), size), atol=1e-10)


def test_other_sigma_matches_reference():
    patch_scores = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    maps = AnomalyMapGenerator((30, 30), sigma=1.5)(patch_scores)
    expected = reference_maps(patch_scores.double().numpy(), (30, 30), sigma=1.5)
    np.testing.assert_allclose(maps.numpy(), expected, atol=1e-5)


def test_input_is_not_modified():
    patch_scores = torch.rand(1, 1, 4, 4)
    copy = patch_scores.clone()
    AnomalyMapGenerator((16, 16))(patch_scores)
    assert torch.equal(patch_scores, copy)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"input_size": (0, 8)}, ValueError, "input_size"),
        ({"input_size": 8}, TypeError, "input_size"),
        ({"input_size": (8.0, 8)}, TypeError, "input_size"),
        ({"input_size": (8, 8), "sigma": 0.0}, ValueError, "sigma must be > 0"),
        ({"input_size": (8, 8), "sigma": float("nan")}, ValueError, "sigma must be finite"),
    ],
)
def test_bad_arguments_raise(options, error, message):
    with pytest.raises(error, match=message):
        AnomalyMapGenerator(**options)


@pytest.mark.parametrize(
    "patch_scores, error",
    [
        (torch.rand(2, 2, 4, 4), ValueError),
        (torch.rand(4, 4), ValueError),
        (torch.zeros(0, 1, 4, 4), ValueError),
        (torch.ones(1, 1, 4, 4, dtype=torch.int64), TypeError),
    ],
)
def test_bad_patch_scores_raise(patch_scores, error):
    with pytest.raises(error, match="patch_scores"):
        AnomalyMapGenerator((16, 16))(patch_scores)
