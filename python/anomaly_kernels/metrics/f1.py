"""ThresholdF1Score: binary F1 of ``score >= threshold`` with the threshold in score units."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import BinaryF1Score

from anomaly_kernels.metrics._inputs import check_binary_target, check_scores


class ThresholdF1Score(BinaryF1Score):
    """Binary F1 of the prediction ``score >= threshold``, with the threshold in score units.

    :class:`torchmetrics.classification.BinaryF1Score` squashes scores outside [0, 1] with a
    sigmoid and predicts ``score > threshold``. Anomaly scores are distances or densities on any
    scale and the adaptive threshold is one of the scores, so this metric compares the raw score
    with ``>=`` (the rule of ``pred_labels``) and accepts any real ``threshold``. The threshold is
    applied in ``update``: set it before updating. Only the four confusion counts are kept, so
    pixel-level use needs no per-pixel memory.

    ``update(preds, target)``: scores of any shape ((B,), (B, 1, H, W)) and 0/1 labels with as
    many elements; both are flattened.

    Args:
        threshold: any real number.
        **kwargs: passed to :class:`BinaryF1Score`.

    Example:
        >>> f1 = ThresholdF1Score(threshold=35.0)
        >>> f1.update(torch.tensor([20.0, 30.0, 40.0, 50.0]), torch.tensor([0, 1, 0, 1]))
        >>> f1.compute()
        tensor(0.5000)
    """

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(threshold=0.5, **kwargs)
        self.threshold = float(threshold)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count TP/FP/FN of ``preds >= threshold`` against ``target`` (same number of elements, 0/1)."""
        check_scores(preds)
        check_binary_target(target, preds)
        super().update((preds.flatten() >= self.threshold).long(), target.flatten().long().to(preds.device))
