"""AUROC: area under the ROC curve of raw anomaly scores, exact or from a fixed-size histogram."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from anomaly_kernels.metrics.threshold_curve import ThresholdCurveMetric


class AUROC(ThresholdCurveMetric):
    """Binary area under the ROC curve of anomaly scores on any scale.

    ``update(preds, target)``: scores of any shape ((B,) image scores, (B, 1, H, W) maps) and 0/1
    labels with as many elements ((B,), (B, 1, H, W) or (B, H, W)); both are flattened. Scores are
    ranked as they are: no sigmoid, which would squash large distances into ties.

    ``compute`` integrates TPR over FPR with the trapezoidal rule from (0, 0) over every candidate
    threshold; tied scores form one diagonal step, so pairs with equal scores count one half,
    as in ``sklearn.metrics.roc_auc_score``. Exact mode (``num_bins=None``) gives exactly that
    value; binned mode treats every positive-negative pair sharing a bin as a tie, an error of at
    most ``sum_b P_b·N_b / (2·P·N)`` (bins at most ``2 · (max - min) / (num_bins - 1)`` wide).

    Without positives or without negatives the ROC curve is undefined: ``compute`` warns and
    returns 0 (as torchmetrics does).

    Args:
        num_bins: ``None`` (exact) or the histogram size of binned mode (≥ 2).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> auroc = AUROC()
        >>> auroc.update(torch.tensor([20.0, 30.0, 40.0, 50.0]), torch.tensor([0, 1, 0, 1]))
        >>> auroc.compute()
        tensor(0.7500)
    """

    higher_is_better = True

    def __init__(self, num_bins: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_bins=num_bins, **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Collect scores ``preds`` (any shape) and their 0/1 ``target`` (same number of elements).

        Raises:
            TypeError: non-tensor or non-real input.
            ValueError: different element counts, NaN/infinite scores or labels outside {0, 1}.
        """
        self._collect_binary(preds, target)

    def compute(self) -> torch.Tensor:
        """Return the 0-dim float32 area under the ROC curve of everything collected.

        Raises:
            RuntimeError: nothing was collected.
        """
        curve = self._curve()
        positives, negatives = float(curve.positive[-1]), float(curve.negative[-1])
        if positives == 0 or negatives == 0:
            warnings.warn(
                f"AUROC is undefined with {int(positives)} positive and {int(negatives)} negative samples; "
                "returning 0.",
                UserWarning,
                stacklevel=2,
            )
            return torch.tensor(0.0)
        zero = curve.positive.new_zeros(1)
        true_positive_rate = torch.cat([zero, curve.positive / positives])
        false_positive_rate = torch.cat([zero, curve.negative / negatives])
        return torch.trapezoid(true_positive_rate, false_positive_rate).float()
