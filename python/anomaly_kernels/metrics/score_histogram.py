"""Streaming histogram of weighted scores on a power-of-two grid: fixed memory, exact re-binning.

Pixel-level curves (F1 threshold, ROC, PRO) need, for every threshold ``t``, the positive weight
and the negative count of the scores ``>= t``. Keeping every pixel of a validation set costs
gigabytes; a histogram of ``num_bins`` bins costs ``3 · num_bins`` float64 values however many
scores it sees, and every threshold it offers is still evaluated exactly.

Grid. Bin ``i`` covers the half-open interval ``[(base + i)·W, (base + i + 1)·W)`` with the bin
width ``W = 2**exponent``. A score ``x`` falls in bin ``floor(x · 2**-exponent) - base``: scaling
by a power of two is exact in float64, so the bin of a score is exact and monotone in the score.
When a score arrives outside the covered range, the width doubles as often as needed and the
grid shifts: since every new bin edge is an old bin edge, old bins merge into new ones without
loss (old absolute index ``a`` goes to ``a >> s``). The width is always the smallest power of two
whose grid covers the observed ``[low, high]`` with ``num_bins`` bins, so
``W <= 2 · (high - low) / (num_bins - 1)`` (or ``max(|low|, |high|) · 2**-40`` for a near-constant
stream, far below float32 resolution).

Exact thresholds. Each bin also keeps the smallest score it received. Since binning is monotone,
a score is ``>= minimum[k]`` exactly when its bin is ``>= k``: the counts above bin ``k`` are the
exact counts of the prediction ``score >= minimum[k]``. The curve of a histogram is therefore the
exact curve restricted to these thresholds; only samples sharing a bin are merged into one step.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

# The grid never gets finer than max|score| · 2**-40: absolute bin indices stay below 2**41 + num_bins
# (safe in int64), and float32 scores (24-bit mantissa) are still resolved far below their spacing.
_RELATIVE_RESOLUTION_BITS = 40
# Lower bound of the exponent for an all-zero stream; 2**-1000 keeps every scaling finite in float64.
_SMALLEST_EXPONENT = -1000


class ScoreHistogram(NamedTuple):
    """A histogram of weighted scores; see the module docstring for the grid.

    Attributes:
        exponent: bin width ``2**exponent``.
        base: absolute grid index of local bin 0.
        positive: (num_bins,) float64 summed positive weight per bin.
        negative: (num_bins,) float64 summed negative weight (count) per bin.
        minimum: (num_bins,) float64 smallest score per bin, ``+inf`` for empty bins.
        low: smallest score seen, ``+inf`` while empty.
        high: largest score seen, ``-inf`` while empty.
    """

    exponent: int
    base: int
    positive: torch.Tensor
    negative: torch.Tensor
    minimum: torch.Tensor
    low: float
    high: float

    @property
    def num_bins(self) -> int:
        return self.positive.numel()

    @property
    def is_empty(self) -> bool:
        return not math.isfinite(self.low)


def empty_histogram(num_bins: int, device: torch.device | str | None = None) -> ScoreHistogram:
    """An empty histogram of ``num_bins`` bins."""
    zeros = torch.zeros(num_bins, dtype=torch.float64, device=device)
    return ScoreHistogram(
        0,
        0,
        zeros,
        zeros.clone(),
        torch.full((num_bins,), math.inf, dtype=torch.float64, device=device),
        math.inf,
        -math.inf,
    )


def grid_for_range(low: float, high: float, num_bins: int, min_exponent: int | None = None) -> tuple[int, int]:
    """The finest grid (``exponent >= min_exponent``) whose ``num_bins`` bins cover ``[low, high]``.

    Args:
        low, high: finite range, ``low <= high``.
        num_bins: number of bins (≥ 2).
        min_exponent: the grid may not get finer than this (an existing histogram's exponent).

    Returns:
        ``(exponent, base)`` with ``base = floor(low · 2**-exponent)``.
    """
    magnitude = max(abs(low), abs(high))
    candidates = [_SMALLEST_EXPONENT]
    if magnitude > 0:
        candidates.append(math.frexp(magnitude)[1] - _RELATIVE_RESOLUTION_BITS - 1)
    span = high - low
    if span > 0:
        # A width below span / num_bins can never cover the range: start just there, climb below.
        candidates.append(math.floor(math.log2(span / num_bins)) if math.isfinite(span) else 1023)
    if min_exponent is not None:
        candidates.append(min_exponent)
    exponent = max(candidates)
    # floor(high/W) - floor(low/W) only shrinks as W doubles: the first exponent that fits is the finest.
    while math.floor(math.ldexp(high, -exponent)) - math.floor(math.ldexp(low, -exponent)) >= num_bins:
        exponent += 1
    return exponent, math.floor(math.ldexp(low, -exponent))


def regroup(histogram: ScoreHistogram, exponent: int, base: int) -> ScoreHistogram:
    """Move ``histogram`` onto the coarser (or equal) grid ``(exponent, base)`` without loss.

    Args:
        histogram: a histogram whose occupied bins lie inside the target grid.
        exponent: target exponent, ``>= histogram.exponent``.
        base: target base.

    Returns:
        The same samples on the target grid.
    """
    if exponent < histogram.exponent:
        raise ValueError(f"cannot regroup onto a finer grid: exponent {exponent} < {histogram.exponent}")
    if (exponent, base) == (histogram.exponent, histogram.base):
        return histogram
    num_bins = histogram.num_bins
    device = histogram.positive.device
    occupied = torch.isfinite(histogram.minimum)
    absolute = histogram.base + torch.arange(num_bins, device=device, dtype=torch.int64)[occupied]
    # Arithmetic right shift = floor division by 2**shift, also for negative indices; a shift of 63
    # already maps every int64 to 0 or -1.
    target = torch.bitwise_right_shift(absolute, min(exponent - histogram.exponent, 63)) - base
    result = empty_histogram(num_bins, device)
    return ScoreHistogram(
        exponent,
        base,
        result.positive.index_add(0, target, histogram.positive[occupied]),
        result.negative.index_add(0, target, histogram.negative[occupied]),
        result.minimum.scatter_reduce(0, target, histogram.minimum[occupied], reduce="amin"),
        histogram.low,
        histogram.high,
    )


def add_scores(
    histogram: ScoreHistogram,
    scores: torch.Tensor,
    positive_weight: torch.Tensor,
    negative_weight: torch.Tensor,
) -> ScoreHistogram:
    """Add weighted scores, widening the grid first when they fall outside it.

    Args:
        histogram: the histogram so far.
        scores: (N,) finite scores.
        positive_weight: (N,) weight each score adds to the positive side (0 for negatives).
        negative_weight: (N,) weight each score adds to the negative side.

    Returns:
        The updated histogram (tensors are replaced, never modified in place).
    """
    if scores.numel() == 0:
        return histogram
    scores = scores.to(device=histogram.positive.device, dtype=torch.float64)
    batch_low, batch_high = (float(value) for value in scores.aminmax())
    low, high = min(histogram.low, batch_low), max(histogram.high, batch_high)
    if histogram.is_empty:
        exponent, base = grid_for_range(low, high, histogram.num_bins)
        histogram = histogram._replace(exponent=exponent, base=base)
    else:
        exponent, base = grid_for_range(low, high, histogram.num_bins, min_exponent=histogram.exponent)
        histogram = regroup(histogram, exponent, base)
    index = torch.floor(scores * math.ldexp(1.0, -exponent)).to(torch.int64) - base
    return ScoreHistogram(
        exponent,
        base,
        histogram.positive.index_add(0, index, positive_weight.to(histogram.positive)),
        histogram.negative.index_add(0, index, negative_weight.to(histogram.negative)),
        histogram.minimum.scatter_reduce(0, index, scores, reduce="amin"),
        low,
        high,
    )


def merge_histograms(histograms: Sequence[ScoreHistogram]) -> ScoreHistogram:
    """Sum histograms with equal ``num_bins`` (e.g. from several processes) on one common grid.

    Raises:
        ValueError: no histogram, or different bin counts.
    """
    if not histograms:
        raise ValueError("merge_histograms needs at least one histogram")
    num_bins = histograms[0].num_bins
    if any(histogram.num_bins != num_bins for histogram in histograms):
        raise ValueError(f"cannot merge histograms of different sizes {[h.num_bins for h in histograms]}")
    filled = [histogram for histogram in histograms if not histogram.is_empty]
    if not filled:
        return histograms[0]
    low, high = min(h.low for h in filled), max(h.high for h in filled)
    exponent, base = grid_for_range(low, high, num_bins, min_exponent=max(h.exponent for h in filled))
    regrouped = [regroup(histogram, exponent, base) for histogram in filled]
    device = regrouped[0].positive.device
    return ScoreHistogram(
        exponent,
        base,
        torch.stack([h.positive.to(device) for h in regrouped]).sum(0),
        torch.stack([h.negative.to(device) for h in regrouped]).sum(0),
        torch.stack([h.minimum.to(device) for h in regrouped]).amin(0),
        low,
        high,
    )
