"""Tests of the streaming score histogram: grid choice, lossless re-binning and merging.

The reference is a numpy histogram of all scores on the final grid: bin = floor(x / 2**e) - base,
counts with np.bincount, per-bin minima with np.minimum.at.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anomaly_kernels.metrics.score_histogram import (
    add_scores,
    empty_histogram,
    grid_for_range,
    merge_histograms,
    regroup,
)

NUM_BINS = 64


def numpy_histogram(scores: np.ndarray, positive: np.ndarray, exponent: int, base: int, num_bins: int):
    index = np.floor(scores.astype(np.float64) / 2.0**exponent).astype(np.int64) - base
    assert index.min() >= 0 and index.max() < num_bins
    positive_weight = np.bincount(index, weights=positive, minlength=num_bins)
    negative_weight = np.bincount(index, weights=(positive == 0).astype(np.float64), minlength=num_bins)
    minimum = np.full(num_bins, np.inf)
    np.minimum.at(minimum, index, scores.astype(np.float64))
    return positive_weight, negative_weight, minimum


def stream(chunks, num_bins=NUM_BINS):
    histogram = empty_histogram(num_bins)
    for scores, positive in chunks:
        histogram = add_scores(histogram, scores, positive, (positive == 0).double())
    return histogram


def assert_matches_numpy(histogram, scores: torch.Tensor, positive: torch.Tensor):
    expected = numpy_histogram(scores.numpy(), positive.double().numpy(), histogram.exponent, histogram.base,
                               histogram.num_bins)
    assert np.array_equal(histogram.positive.numpy(), expected[0])
    assert np.array_equal(histogram.negative.numpy(), expected[1])
    assert np.array_equal(histogram.minimum.numpy(), expected[2])
    assert histogram.low == float(scores.min()) and histogram.high == float(scores.max())


@pytest.mark.parametrize("seed", range(4))
def test_streamed_chunks_with_growing_range_equal_one_numpy_histogram(seed):
    generator = torch.Generator().manual_seed(seed)
    # Chunks widen the range in both directions, so the grid doubles and shifts several times.
    chunks = []
    for scale in (0.01, 0.1, 1.0, 10.0, 3.0):
        scores = (torch.randn(300, generator=generator) * scale + scale).float()
        chunks.append((scores, (torch.rand(300, generator=generator) < 0.3).float()))
    histogram = stream(chunks)
    scores = torch.cat([chunk[0] for chunk in chunks])
    positive = torch.cat([chunk[1] for chunk in chunks])
    assert_matches_numpy(histogram, scores, positive)
    # The grid is the finest power-of-two grid for the final range, whatever the arrival order.
    assert (histogram.exponent, histogram.base) == grid_for_range(histogram.low, histogram.high, NUM_BINS)
    span = histogram.high - histogram.low
    assert 2.0**histogram.exponent <= 2 * span / (NUM_BINS - 1)
    assert float(histogram.positive.sum()) == float(positive.sum())
    assert float(histogram.negative.sum()) == float((positive == 0).sum())
    shuffled = stream(list(reversed(chunks)))
    assert torch.equal(shuffled.positive, histogram.positive) and torch.equal(shuffled.minimum, histogram.minimum)


def test_grid_is_the_finest_that_covers_the_range():
    for low, high in [(0.0, 1.0), (-3.5, 2.25), (1e6, 1e6 + 0.5), (-7.0, -6.999), (0.0, 63.0), (0.0, 64.0)]:
        exponent, base = grid_for_range(low, high, NUM_BINS)
        width = 2.0**exponent
        assert base == math.floor(low / width)
        assert math.floor(high / width) - base < NUM_BINS  # covered
        finer = width / 2
        assert math.floor(high / finer) - math.floor(low / finer) >= NUM_BINS  # one step finer is not


def test_constant_then_spread_scores_and_negative_offsets():
    constant = torch.full((10,), -1234.5)
    spread = torch.linspace(-1300.0, -1200.0, 101)
    chunks = [(constant, torch.ones(10)), (spread, torch.zeros(101))]
    histogram = stream(chunks)
    assert_matches_numpy(histogram, torch.cat([constant, spread]), torch.cat([torch.ones(10), torch.zeros(101)]))


def test_all_equal_scores_fill_one_bin():
    histogram = stream([(torch.zeros(5), torch.tensor([1.0, 0, 0, 1, 0]))])
    occupied = torch.isfinite(histogram.minimum)
    assert int(occupied.sum()) == 1
    assert float(histogram.positive.sum()) == 2 and float(histogram.negative.sum()) == 3


def test_regroup_is_lossless_and_refuses_finer_grids():
    generator = torch.Generator().manual_seed(7)
    scores, positive = torch.rand(500, generator=generator), (torch.rand(500, generator=generator) < 0.5).float()
    histogram = stream([(scores, positive)])
    coarser = regroup(histogram, histogram.exponent + 3, math.floor(histogram.low / 2.0 ** (histogram.exponent + 3)))
    assert_matches_numpy(coarser, scores, positive)
    with pytest.raises(ValueError, match="finer grid"):
        regroup(histogram, histogram.exponent - 1, 0)


def test_merge_equals_one_histogram_of_everything():
    generator = torch.Generator().manual_seed(3)
    parts = [(torch.randn(200, generator=generator) * s + o, (torch.rand(200, generator=generator) < 0.4).float())
             for s, o in ((0.01, 5.0), (2.0, -1.0), (0.5, 0.0))]
    merged = merge_histograms([stream([part]) for part in parts] + [empty_histogram(NUM_BINS)])
    assert_matches_numpy(merged, torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    with pytest.raises(ValueError, match="different sizes"):
        merge_histograms([empty_histogram(4), empty_histogram(8)])
    assert merge_histograms([empty_histogram(4)]).is_empty
