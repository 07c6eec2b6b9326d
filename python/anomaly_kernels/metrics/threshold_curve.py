"""ThresholdCurveMetric: collects weighted scores exactly or in a fixed-size histogram, yields their curve.

F1-optimal thresholds, ROC and PRO curves all need the same thing: for every candidate threshold
``t`` (from the highest to the lowest), the positive weight and the negative weight of the samples
with ``score >= t``. This base class collects samples either exactly (every score, for image-level
data with a few hundred values) or in a :mod:`~anomaly_kernels.metrics.score_histogram` of
``num_bins`` bins (pixel-level data: memory independent of the number of pixels), and returns that
curve in both cases.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from anomaly_kernels.metrics._inputs import check_binary_target, check_num_bins, check_scores
from anomaly_kernels.metrics.score_histogram import (
    ScoreHistogram,
    add_scores,
    empty_histogram,
    merge_histograms,
)

_HISTOGRAM_STATES = (
    "bin_exponent",
    "bin_base",
    "bin_positive",
    "bin_negative",
    "bin_minimum",
    "score_low",
    "score_high",
)


class ThresholdCurve(NamedTuple):
    """Cumulative weights at every candidate threshold, thresholds in decreasing order.

    Attributes:
        thresholds: (K,) float64 candidate thresholds, strictly decreasing.
        positive: (K,) float64 positive weight of the samples with ``score >= thresholds[k]``.
        negative: (K,) float64 negative weight of those samples.
        highest: the highest collected score.
    """

    thresholds: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    highest: float


def exact_curve(scores: torch.Tensor, positive_weight: torch.Tensor) -> ThresholdCurve:
    """The curve whose thresholds are the distinct scores.

    Args:
        scores: (N,) scores, N ≥ 1.
        positive_weight: (N,) weight > 0 for positive samples, 0 for negatives (weight 1 each).
    """
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores = scores[order].double()
    weights = positive_weight[order].double()
    positive = torch.cumsum(weights, dim=0)
    negative = torch.cumsum((weights == 0).double(), dim=0)
    # Threshold t = sorted_scores[i] selects the whole run of scores equal to it: keep run ends.
    run_end = torch.ones_like(sorted_scores, dtype=torch.bool)
    run_end[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    return ThresholdCurve(sorted_scores[run_end], positive[run_end], negative[run_end], float(sorted_scores[0]))


def histogram_curve(histogram: ScoreHistogram) -> ThresholdCurve:
    """The curve whose thresholds are the smallest score of every occupied bin (exact counts at each)."""
    occupied = torch.isfinite(histogram.minimum)
    thresholds = torch.flip(histogram.minimum[occupied], dims=(0,))
    positive = torch.cumsum(torch.flip(histogram.positive[occupied], dims=(0,)), dim=0)
    negative = torch.cumsum(torch.flip(histogram.negative[occupied], dims=(0,)), dim=0)
    return ThresholdCurve(thresholds, positive, negative, histogram.high)


class ThresholdCurveMetric(Metric):
    """Base metric collecting ``(score, positive weight)`` samples; subclasses turn the curve into a value.

    A sample with positive weight 0 is a negative of weight 1. Binary labels give weight 1 to
    positives; AUPRO gives each anomalous pixel the weight ``1 / (size of its region)``.

    Exact mode (``num_bins=None``) keeps every score (float32) and weight: 8 bytes a sample.
    Binned mode keeps a :class:`ScoreHistogram` of ``num_bins`` bins (three float64 values a bin),
    whatever the number of samples; its candidate thresholds are the smallest score of each bin
    and the counts at each are exact, so results differ from exact mode only where samples share
    a bin (bin width at most ``2 · (max - min) / (num_bins - 1)``).

    Across processes, exact mode concatenates; binned mode gathers each process's histogram
    unreduced and merges them onto a common grid in ``compute``. ``merge_state`` merges another
    metric's samples the same way.

    Args:
        num_bins: ``None`` for exact mode, else the histogram size (≥ 2).
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = None
    # Histogram states merge by re-gridding, not by a fixed elementwise reduction: forward must run
    # full updates (no state merge), and merge_state is implemented here.
    full_state_update = True

    def __init__(self, num_bins: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_bins = check_num_bins(num_bins)
        if self.num_bins is None:
            self.add_state("preds", default=[], dist_reduce_fx="cat")
            self.add_state("positive_weight", default=[], dist_reduce_fx="cat")
        else:
            empty = empty_histogram(self.num_bins)
            self.add_state("bin_exponent", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx=None)
            self.add_state("bin_base", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx=None)
            self.add_state("bin_positive", default=empty.positive, dist_reduce_fx=None)
            self.add_state("bin_negative", default=empty.negative, dist_reduce_fx=None)
            self.add_state("bin_minimum", default=empty.minimum, dist_reduce_fx=None)
            self.add_state("score_low", default=torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx=None)
            self.add_state("score_high", default=torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx=None)

    @property
    def binned(self) -> bool:
        """Whether samples are collected in a histogram (``num_bins`` set) rather than kept."""
        return self.num_bins is not None

    def _collect(self, scores: torch.Tensor, positive_weight: torch.Tensor) -> None:
        """Add validated samples: ``scores`` (N,) and ``positive_weight`` (N,) (0 = negative)."""
        scores = scores.detach().flatten()
        positive_weight = positive_weight.detach().flatten()
        if not self.binned:
            self.preds.append(scores.float().to(self.device))
            self.positive_weight.append(positive_weight.float().to(self.device))
            return
        histogram = add_scores(
            self._local_histogram(), scores, positive_weight, (positive_weight == 0).to(torch.float64)
        )
        self._store_histogram(histogram)

    def _collect_binary(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Check and collect scores ``preds`` (any shape) with 0/1 labels ``target`` (same size)."""
        check_scores(preds)
        check_binary_target(target, preds)
        self._collect(preds, target.detach().flatten().to(device=preds.device, dtype=torch.float32))

    def _curve(self) -> ThresholdCurve:
        """The curve of everything collected (merged across processes after a sync).

        Raises:
            RuntimeError: nothing was collected.
        """
        name = type(self).__name__
        if not self.binned:
            empty = isinstance(self.preds, list) and not self.preds
            scores = torch.empty(0) if empty else dim_zero_cat(self.preds)
            if scores.numel() == 0:
                raise RuntimeError(f"{name}.compute needs scores: call update with at least one sample first")
            return exact_curve(scores, dim_zero_cat(self.positive_weight))
        histogram = merge_histograms(self._histograms_of(self.metric_state))
        if histogram.is_empty:
            raise RuntimeError(f"{name}.compute needs scores: call update with at least one sample first")
        return histogram_curve(histogram)

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add the samples of another metric of the same class and mode (or of its ``metric_state``).

        Raises:
            ValueError: another class, another ``num_bins``, or missing states.
        """
        if isinstance(incoming_state, Metric):
            if not isinstance(incoming_state, type(self)):
                raise ValueError(
                    f"Expected incoming state to be an instance of {type(self).__name__}, "
                    f"got {type(incoming_state).__name__}"
                )
            if getattr(incoming_state, "num_bins", None) != self.num_bins:
                raise ValueError(
                    f"cannot merge num_bins={incoming_state.num_bins} into num_bins={self.num_bins}"
                )
            incoming_state = incoming_state.metric_state
        if not isinstance(incoming_state, dict):
            raise ValueError(f"Expected a dict or a Metric as incoming state, got {type(incoming_state).__name__}")
        missing = sorted(set(self._defaults) - set(incoming_state))
        if missing:
            raise ValueError(f"incoming state lacks the states {missing}")
        if self.binned:
            histograms = self._histograms_of(self.metric_state) + self._histograms_of(incoming_state)
            self._store_histogram(merge_histograms(histograms))
        else:
            self.preds = list(self.preds) + _as_list(incoming_state["preds"])
            self.positive_weight = list(self.positive_weight) + _as_list(incoming_state["positive_weight"])
        self._merge_extra_states(incoming_state)
        self._update_count += 1
        self._computed = None

    def _merge_extra_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge subclass states beyond the collected samples (none here)."""

    def _local_histogram(self) -> ScoreHistogram:
        return ScoreHistogram(
            int(self.bin_exponent),
            int(self.bin_base),
            self.bin_positive.double(),
            self.bin_negative.double(),
            self.bin_minimum.double(),
            float(self.score_low),
            float(self.score_high),
        )

    def _store_histogram(self, histogram: ScoreHistogram) -> None:
        device = self.bin_positive.device
        self.bin_exponent = torch.tensor(histogram.exponent, dtype=torch.int64, device=device)
        self.bin_base = torch.tensor(histogram.base, dtype=torch.int64, device=device)
        self.bin_positive = histogram.positive.to(device)
        self.bin_negative = histogram.negative.to(device)
        self.bin_minimum = histogram.minimum.to(device)
        self.score_low = torch.tensor(histogram.low, dtype=torch.float64, device=device)
        self.score_high = torch.tensor(histogram.high, dtype=torch.float64, device=device)

    def _histograms_of(self, state: dict[str, Any]) -> list[ScoreHistogram]:
        """Histograms held in ``state``: one, or one per process after a sync stacked them (leading dim)."""
        positive = state["bin_positive"]
        if positive.dim() == 1:
            stacked = {name: state[name].unsqueeze(0) for name in _HISTOGRAM_STATES}
        else:
            stacked = {name: state[name] for name in _HISTOGRAM_STATES}
        return [
            ScoreHistogram(
                int(stacked["bin_exponent"][rank]),
                int(stacked["bin_base"][rank]),
                stacked["bin_positive"][rank].double(),
                stacked["bin_negative"][rank].double(),
                stacked["bin_minimum"][rank].double(),
                float(stacked["score_low"][rank]),
                float(stacked["score_high"][rank]),
            )
            for rank in range(stacked["bin_positive"].shape[0])
        ]


def _as_list(state: Any) -> list[torch.Tensor]:
    """A concatenable list state from either a list of tensors or one tensor."""
    if isinstance(state, torch.Tensor):
        return [state]
    return list(state)
