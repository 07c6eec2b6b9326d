"""Min-max and CDF normalisation against numpy/scipy formulas; threshold at 0.5, order preserved."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from anomaly_kernels.metrics import normalize_cdf, normalize_min_max


def scores(seed: int, shape=(4, 1, 6, 6)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(shape, generator=generator))  # positive, log-normal


def test_min_max_matches_the_formula_and_keeps_input():
    raw = scores(0)
    before = raw.clone()
    result = normalize_min_max(raw, threshold=1.2, min_value=0.3, max_value=4.0)
    expected = np.clip((raw.numpy().astype(np.float64) - 1.2) / (4.0 - 0.3) + 0.5, 0.0, 1.0)
    assert result.dtype == torch.float32 and result.shape == raw.shape
    assert np.allclose(result.numpy(), expected, atol=1e-7)
    assert torch.equal(raw, before)


def test_cdf_matches_scipy_and_keeps_input():
    raw = scores(1)
    before = raw.clone()
    mean, std, threshold = 0.2, 0.8, 1.5
    result = normalize_cdf(raw, threshold, torch.tensor(mean, dtype=torch.float64), std)
    standardized = (np.log(raw.numpy().astype(np.float64)) - mean) / std
    expected = norm.cdf(standardized - (math.log(threshold) - mean) / std)
    assert result.dtype == torch.float32 and np.allclose(result.numpy(), expected, atol=1e-7)
    assert torch.equal(raw, before)


@pytest.mark.parametrize("method", ["min_max", "cdf"])
def test_threshold_maps_to_one_half_and_order_is_kept(method):
    raw = torch.sort(scores(2, (500,))).values
    threshold = float(raw[237])
    if method == "min_max":
        normalized = normalize_min_max(raw, threshold, float(raw.min()), float(raw.max()))
    else:
        normalized = normalize_cdf(raw, threshold, 0.0, 1.0)
    assert float(normalized[237]) == 0.5
    assert torch.all(normalized[1:] >= normalized[:-1])  # monotone (clipping may tie)
    assert torch.equal(normalized >= 0.5, raw >= threshold)


@pytest.mark.parametrize("method", ["min_max", "cdf"])
def test_scores_a_rounding_error_below_the_threshold_stay_below_one_half(method):
    threshold = 1000.0
    below = torch.nextafter(torch.tensor([threshold]), torch.tensor([0.0]))  # one float32 ulp below
    at = torch.tensor([threshold])
    if method == "min_max":
        low, high = normalize_min_max(torch.cat([below, at]), threshold, 0.0, 1e9)
    else:
        low, high = normalize_cdf(torch.cat([below, at]), threshold, 0.0, 50.0)
    assert float(low) < 0.5 and float(high) == 0.5


def test_statistics_are_validated():
    raw = scores(3)
    with pytest.raises(ValueError, match="max_value > min_value"):
        normalize_min_max(raw, 1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="threshold must be finite"):
        normalize_min_max(raw, float("inf"), 0.0, 1.0)
    with pytest.raises(TypeError, match="min_value must be a real number"):
        normalize_min_max(raw, 1.0, "0", 1.0)
    with pytest.raises(ValueError, match="single number"):
        normalize_min_max(raw, torch.ones(2), 0.0, 1.0)
    with pytest.raises(ValueError, match="std > 0"):
        normalize_cdf(raw, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="positive threshold"):
        normalize_cdf(raw, -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="positive targets"):
        normalize_cdf(raw - 10, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        normalize_cdf(torch.tensor([float("nan")]), 1.0, 0.0, 1.0)
