"""MinMax: running minimum and maximum of anomaly scores, the statistics of min-max normalisation."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from anomaly_kernels.metrics._inputs import check_scores


class MinMax(Metric):
    """Running minimum and maximum of anomaly scores and maps: the min-max normalisation statistics.

    ``update(predictions)`` folds scores of any shape ((B,) image scores, (B, 1, H, W) maps) into
    the running extremes; empty tensors are ignored. Across processes the extremes reduce with
    min/max.

    Attributes:
        min: 0-dim float32 state, +inf until updated; persistent (saved in ``state_dict``).
        max: 0-dim float32 state, -inf until updated; persistent.

    Example:
        >>> stats = MinMax()
        >>> stats.update(torch.tensor([0.3, 2.0])); stats.update(torch.tensor([[-1.0]]))
        >>> stats.compute()
        (tensor(-1.), tensor(2.))
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("min", default=torch.tensor(float("inf")), dist_reduce_fx="min", persistent=True)
        self.add_state("max", default=torch.tensor(float("-inf")), dist_reduce_fx="max", persistent=True)

    def update(self, predictions: torch.Tensor) -> None:
        """Fold ``predictions`` (any shape) into the running extremes.

        Raises:
            TypeError: not a real-valued tensor.
            ValueError: NaN or infinite values.
        """
        check_scores(predictions, "predictions")
        if predictions.numel() == 0:
            return
        # Reduce where the values are, move only the two extremes.
        low, high = predictions.detach().aminmax()
        self.min = torch.minimum(self.min, low.to(device=self.min.device, dtype=self.min.dtype))
        self.max = torch.maximum(self.max, high.to(device=self.max.device, dtype=self.max.dtype))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(min, max)`` as 0-dim tensors."""
        return self.min, self.max
