"""MinMax and AnomalyScoreDistribution: running statistics against numpy, and their persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anomaly_kernels.metrics import AnomalyScoreDistribution, MinMax


def test_min_max_follows_numpy_over_chunks_and_restores_into_a_fresh_metric():
    generator = torch.Generator().manual_seed(0)
    chunks = [
        torch.randn(4, 1, 5, 5, generator=generator) * 3,
        torch.randn(7, generator=generator) + 10,
        torch.empty(0),
    ]
    stats = MinMax()
    for chunk in chunks:
        stats.update(chunk)
    everything = np.concatenate([chunk.numpy().ravel() for chunk in chunks])
    low, high = stats.compute()
    assert float(low) == everything.min() and float(high) == everything.max()
    fresh = MinMax()
    fresh.load_state_dict(stats.state_dict())
    assert sorted(stats.state_dict()) == ["max", "min"]
    assert torch.equal(fresh.min, stats.min) and torch.equal(fresh.max, stats.max)


def test_min_max_rejects_nan_and_starts_at_infinities():
    stats = MinMax()
    assert math.isinf(float(stats.min)) and float(stats.min) > 0 and float(stats.max) < 0
    with pytest.raises(ValueError, match="NaN"):
        stats.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="predictions"):
        stats.update(np.ones(3))


def test_distribution_matches_numpy_log_moments_and_persists():
    generator = torch.Generator().manual_seed(1)
    scores = [torch.rand(8, generator=generator) * 5 + 0.1, torch.rand(3, generator=generator) + 0.5]
    maps = [torch.rand(8, 1, 6, 6, generator=generator) + 0.01, torch.rand(3, 1, 6, 6, generator=generator) * 9 + 1]
    distribution = AnomalyScoreDistribution()
    for image_scores, anomaly_maps in zip(scores, maps):
        distribution.update(anomaly_scores=image_scores, anomaly_maps=anomaly_maps)
    log_scores = np.log(np.concatenate([s.numpy() for s in scores]).astype(np.float64))
    log_pixels = np.log(np.concatenate([m.numpy().ravel() for m in maps]).astype(np.float64))
    statistics = distribution.compute()
    assert float(statistics.image_mean) == pytest.approx(log_scores.mean(), abs=1e-12)
    assert float(statistics.image_std) == pytest.approx(log_scores.std(ddof=1), abs=1e-12)
    assert float(statistics.pixel_mean) == pytest.approx(log_pixels.mean(), abs=1e-12)
    assert float(statistics.pixel_std) == pytest.approx(log_pixels.std(ddof=1), abs=1e-12)

    fresh = AnomalyScoreDistribution()
    fresh.load_state_dict(distribution.state_dict())
    assert len(distribution.state_dict()) == 6
    assert all(torch.equal(a, b) for a, b in zip(fresh.statistics(), distribution.statistics()))


def test_distribution_with_too_few_samples_gives_nan_and_rejects_bad_scores():
    distribution = AnomalyScoreDistribution()
    assert all(math.isnan(float(value)) for value in distribution.statistics())
    distribution.update(anomaly_scores=torch.tensor([2.0]))
    statistics = distribution.statistics()
    assert float(statistics.image_mean) == pytest.approx(math.log(2.0)) and math.isnan(float(statistics.image_std))
    with pytest.raises(ValueError, match="anomaly_maps must be positive"):
        distribution.update(anomaly_maps=torch.tensor([[0.5, 0.0]]))
    with pytest.raises(ValueError, match="anomaly_scores must not contain NaN"):
        distribution.update(anomaly_scores=torch.tensor([float("nan")]))
    scores = torch.tensor([1.0, 3.0])
    distribution.update(anomaly_scores=scores)
    assert torch.equal(scores, torch.tensor([1.0, 3.0]))
