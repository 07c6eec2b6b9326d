"""AdaptiveThreshold: the anomaly-score threshold that maximises F1 on labelled validation data."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from anomaly_kernels.metrics.threshold_curve import ThresholdCurveMetric


class AdaptiveThreshold(ThresholdCurveMetric):
    """F1-optimal threshold on the precision-recall curve of collected scores against labels.

    ``update`` collects scores and binary labels (image scores (B,) against image labels (B,),
    or anomaly maps (B, 1, H, W) against masks (B, 1, H, W) or (B, H, W); both are flattened).
    ``compute`` walks the precision-recall curve and stores in ``value`` the threshold ``t`` with
    the largest ``F1 = 2·TP / (2·TP + FP + FN)`` for the prediction ``score >= t``. Ties go to the
    lowest such threshold (the one with the larger recall), as an ``argmax`` over
    ``sklearn.metrics.precision_recall_curve`` does. The curve is one sort (exact mode) or one
    pass over the bins (binned mode) and one cumulative sum: no loop over thresholds.

    Exact mode (``num_bins=None``, the default) keeps every score: the candidate thresholds are
    all distinct scores. Use it for image scores. Binned mode (``num_bins=10_000``, say) keeps a
    fixed-size histogram whatever the number of pixels; the candidates are the smallest score of
    each bin, and the F1 of each candidate is exact. The result is always a collected score, and
    ``score >= value`` reproduces the counts the threshold was chosen on. It equals the exact
    result unless samples around the optimum share a bin; bins are at most
    ``2 · (max - min) / (num_bins - 1)`` wide.

    When the labels hold no positive, F1 is 0 for every threshold; ``compute`` then warns and
    takes the highest collected score, so that every collected sample except those at the
    maximum is predicted normal.

    Args:
        default_value: threshold held in ``value`` before the first ``compute``.
        num_bins: ``None`` (exact) or the histogram size of binned mode (≥ 2).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Attributes:
        value: 0-dim float32 persistent buffer: survives ``state_dict`` / ``load_state_dict``
            and ``reset`` (which only clears the collected scores). The collected scores are not
            checkpointed.

    Example:
        >>> threshold = AdaptiveThreshold()
        >>> threshold.update(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        >>> threshold.compute()
        tensor(0.3500)
    """

    def __init__(self, default_value: float = 0.5, num_bins: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_bins=num_bins, **kwargs)
        if isinstance(default_value, bool) or not isinstance(default_value, (int, float)):
            raise TypeError(f"default_value must be a real number, got {default_value!r}")
        if not math.isfinite(default_value):
            raise ValueError(f"default_value must be finite, got {default_value}")
        self.register_buffer("value", torch.tensor(float(default_value), dtype=torch.float32), persistent=True)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Collect anomaly scores and their binary ground truth.

        Args:
            preds: scores of any shape, e.g. (B,) image scores or (B, 1, H, W) anomaly maps.
            target: labels with the same number of elements, values 0 (normal) or 1 (anomalous).

        Raises:
            TypeError: non-tensor or non-real input.
            ValueError: different element counts, NaN/infinite scores or labels outside {0, 1}.
        """
        self._collect_binary(preds, target)

    def compute(self) -> torch.Tensor:
        """Find the F1-optimal threshold of everything collected since the last ``reset``.

        Returns:
            The 0-dim threshold, also stored in ``value``.

        Raises:
            RuntimeError: nothing was collected.
        """
        curve = self._curve()
        positives = float(curve.positive[-1])
        if positives == 0:
            warnings.warn(
                "AdaptiveThreshold: the collected labels contain no anomalous sample, so F1 is 0 for every "
                "threshold; using the highest collected score as threshold.",
                UserWarning,
                stacklevel=2,
            )
            best = curve.highest
        else:
            # 2TP / (2TP + FP + FN) = 2TP / (predicted positives + actual positives); exact in float64
            # for ratios of integer counts, so ties are detected exactly.
            f1 = 2.0 * curve.positive / (curve.positive + curve.negative + positives)
            # Thresholds decrease along the curve: the last maximum is the lowest threshold.
            last_best = f1.numel() - 1 - int(torch.argmax(torch.flip(f1, dims=(0,))))
            best = float(curve.thresholds[last_best])
        self.value = torch.tensor(best, dtype=self.value.dtype, device=self.value.device)
        return self.value
