"""AnomalyScoreDistribution: running log-score mean and std, the statistics of CDF normalisation."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torchmetrics import Metric

from anomaly_kernels.metrics._inputs import check_scores


class ScoreStatistics(NamedTuple):
    """Mean and (unbiased) standard deviation of log image scores and of log pixel scores (0-dim float64)."""

    image_mean: torch.Tensor
    image_std: torch.Tensor
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor


def _moments(
    total: torch.Tensor, total_squares: torch.Tensor, count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std from running sums; NaN where ``count`` is too small to define them."""
    nan = torch.tensor(math.nan, dtype=torch.float64, device=total.device)
    mean = total / count if count > 0 else nan
    if count < 2:
        return mean, nan
    # Log scores are O(10) in magnitude: float64 sums keep the variance accurate to ~1e-12 relative
    # unless the spread is 1e-6 of the mean; clamp the rounding residue of a constant stream at 0.
    variance = torch.clamp((total_squares - total * total / count) / (count - 1), min=0.0)
    return mean, torch.sqrt(variance)


class AnomalyScoreDistribution(Metric):
    """Running mean and standard deviation of log anomaly scores: the CDF-normalisation statistics.

    CDF normalisation treats anomaly scores as log-normal: it standardises ``log(score)`` and maps
    it through the standard normal CDF. This metric keeps, for image scores and for pixel scores
    separately, the count, sum and sum of squares of the logs (float64), so the statistics stream
    over any number of pixels in fixed memory and reduce across processes by summation. All
    states are persistent (saved in ``state_dict``), so a restored checkpoint normalises as the
    original did. Pixel statistics are one scalar pair over all pixels.

    ``update(anomaly_scores=None, anomaly_maps=None)``: image scores (B,) and/or anomaly maps
    (B, 1, H, W) (any shape; flattened). Scores must be positive (their logarithm is taken).

    ``compute()`` (and :meth:`statistics`, which neither warns nor caches, for statistics restored
    from a checkpoint) returns :class:`ScoreStatistics` ``(image_mean, image_std, pixel_mean,
    pixel_std)``; a mean needs one sample and a std two, else the entry is NaN.

    Example:
        >>> distribution = AnomalyScoreDistribution()
        >>> distribution.update(anomaly_scores=torch.tensor([1.0, 4.0]))
        >>> distribution.statistics().image_mean  # mean of log 1 and log 4 = log 2
        tensor(0.6931, dtype=torch.float64)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for level in ("image", "pixel"):
            for quantity in ("count", "sum", "sum_squares"):
                self.add_state(
                    f"{level}_{quantity}",
                    default=torch.tensor(0.0, dtype=torch.float64),
                    dist_reduce_fx="sum",
                    persistent=True,
                )

    def update(self, anomaly_scores: torch.Tensor | None = None, anomaly_maps: torch.Tensor | None = None) -> None:
        """Fold the logs of image scores (B,) and/or of anomaly maps (B, 1, H, W) into the running sums.

        Raises:
            TypeError: not a real-valued tensor.
            ValueError: NaN, infinite or non-positive scores.
        """
        for level, scores in (("image", anomaly_scores), ("pixel", anomaly_maps)):
            if scores is None:
                continue
            name = "anomaly_scores" if level == "image" else "anomaly_maps"
            check_scores(scores, name)
            if scores.numel() == 0:
                continue
            if bool((scores <= 0).any()):
                raise ValueError(
                    f"{name} must be positive for CDF normalisation (it models log scores), got minimum "
                    f"{float(scores.min())}"
                )
            logs = torch.log(scores.detach().to(torch.float64)).flatten()
            device = getattr(self, f"{level}_count").device
            for quantity, value in (
                ("count", float(logs.numel())),
                ("sum", logs.sum()),
                ("sum_squares", (logs * logs).sum()),
            ):
                state = getattr(self, f"{level}_{quantity}")
                setattr(self, f"{level}_{quantity}", state + torch.as_tensor(value, dtype=torch.float64).to(device))

    def statistics(self) -> ScoreStatistics:
        """The current statistics, straight from the states (no caching, no warning)."""
        image = _moments(self.image_sum.double(), self.image_sum_squares.double(), self.image_count.double())
        pixel = _moments(self.pixel_sum.double(), self.pixel_sum_squares.double(), self.pixel_count.double())
        return ScoreStatistics(image[0], image[1], pixel[0], pixel[1])

    def compute(self) -> ScoreStatistics:
        """Return :class:`ScoreStatistics` ``(image_mean, image_std, pixel_mean, pixel_std)``."""
        return self.statistics()
