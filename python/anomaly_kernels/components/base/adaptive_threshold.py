"""AdaptiveThreshold: the anomaly-score threshold that maximises F1 on labelled validation data."""

from __future__ import annotations

import math
import warnings

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class AdaptiveThreshold(Metric):
    """F1-optimal threshold on the precision-recall curve of collected scores against labels.

    ``update`` collects scores and binary labels (image scores (B,) against image labels (B,),
    or anomaly maps (B, 1, H, W) against masks (B, 1, H, W) or (B, H, W); both are flattened).
    ``compute`` walks the precision-recall curve, whose thresholds are the distinct collected
    scores, and stores in ``value`` the threshold ``t`` with the largest
    ``F1 = 2·TP / (2·TP + FP + FN)`` for the prediction ``score >= t``. Ties go to the lowest such
    threshold (the one with the larger recall), as an ``argmax`` over
    ``sklearn.metrics.precision_recall_curve`` does. The curve is one sort and one cumulative sum:
    no loop over thresholds.

    When the labels hold no positive, F1 is 0 for every threshold; ``compute`` then warns and
    takes the highest collected score, so that every collected sample except those at the
    maximum is predicted normal.

    Args:
        default_value: threshold held in ``value`` before the first ``compute``.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Attributes:
        value: 0-dim float32 persistent buffer: survives ``state_dict`` / ``load_state_dict``
            and ``reset`` (which only clears the collected scores).

    Example:
        >>> threshold = AdaptiveThreshold()
        >>> threshold.update(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        >>> threshold.compute()
        tensor(0.3500)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, default_value: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(default_value, bool) or not isinstance(default_value, (int, float)):
            raise TypeError(f"default_value must be a real number, got {default_value!r}")
        if not math.isfinite(default_value):
            raise ValueError(f"default_value must be finite, got {default_value}")
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.register_buffer("value", torch.tensor(float(default_value), dtype=torch.float32), persistent=True)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Collect anomaly scores and their binary ground truth.

        Args:
            preds: scores of any shape, e.g. (B,) image scores or (B, 1, H, W) anomaly maps.
            target: labels with the same number of elements, values 0 (normal) or 1 (anomalous).

        Raises:
            ValueError: different element counts, NaN scores or labels outside {0, 1}.
        """
        if preds.numel() != target.numel():
            raise ValueError(
                f"preds and target must have the same number of elements, got shapes "
                f"{tuple(preds.shape)} and {tuple(target.shape)}"
            )
        if preds.is_floating_point() and bool(torch.isnan(preds).any()):
            raise ValueError("preds must not contain NaN")
        if bool(((target != 0) & (target != 1)).any()):
            raise ValueError(f"target must hold only 0 and 1, got values {torch.unique(target).tolist()}")
        self.preds.append(preds.detach().flatten().float().to(self.device))
        # Labels as bool: pixel targets are millions of entries; 1 byte each instead of 8.
        self.target.append(target.detach().flatten().bool().to(self.device))

    def compute(self) -> torch.Tensor:
        """Find the F1-optimal threshold of everything collected since the last ``reset``.

        Returns:
            The 0-dim threshold, also stored in ``value``.

        Raises:
            RuntimeError: nothing was collected.
        """
        scores = dim_zero_cat(self.preds) if self.preds else torch.empty(0)
        if scores.numel() == 0:
            raise RuntimeError("AdaptiveThreshold.compute needs scores: call update with at least one sample first")
        labels = dim_zero_cat(self.target)
        positives = int(labels.sum())
        if positives == 0:
            warnings.warn(
                "AdaptiveThreshold: the collected labels contain no anomalous sample, so F1 is 0 for every "
                "threshold; using the highest collected score as threshold.",
                UserWarning,
                stacklevel=2,
            )
            best = scores.max()
        else:
            order = torch.argsort(scores, descending=True, stable=True)
            sorted_scores = scores[order]
            true_positives = torch.cumsum(labels[order].long(), dim=0)
            # Threshold t = sorted_scores[i] predicts every sample with score >= t as anomalous,
            # i.e. the whole run of equal scores: keep only the last index of each run.
            run_end = torch.ones_like(sorted_scores, dtype=torch.bool)
            run_end[:-1] = sorted_scores[1:] != sorted_scores[:-1]
            predicted_positives = torch.arange(1, scores.numel() + 1, device=scores.device)[run_end]
            # 2TP / (2TP + FP + FN) = 2TP / (predicted positives + actual positives); exact in float64
            # for equal ratios of integers, so ties are detected exactly.
            f1 = 2.0 * true_positives[run_end].double() / (predicted_positives + positives).double()
            candidates = sorted_scores[run_end]
            # Candidates run from the highest to the lowest score; the last maximum is the lowest threshold.
            last_best = candidates.numel() - 1 - int(torch.argmax(torch.flip(f1, dims=(0,))))
            best = candidates[last_best]
        self.value = best.detach().to(device=self.value.device, dtype=self.value.dtype)
        return self.value
