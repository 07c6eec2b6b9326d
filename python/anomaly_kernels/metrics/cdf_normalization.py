"""CDF normalisation: log-normal anomaly scores to (0, 1) through the standard normal CDF, threshold at 0.5."""

from __future__ import annotations

import math

import torch

from anomaly_kernels.metrics._inputs import check_finite_number, check_scores
from anomaly_kernels.metrics._normalized_side import pin_to_threshold_side


def standardize_log(targets: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``(log(targets) - mean) / std`` in float64: the z-score of a log-normal score."""
    return (torch.log(targets.detach().to(torch.float64)) - mean) / std


def normalize_cdf(
    targets: torch.Tensor,
    threshold: float | torch.Tensor,
    mean: float | torch.Tensor,
    std: float | torch.Tensor,
) -> torch.Tensor:
    """CDF-normalise anomaly scores: ``Phi(z(targets) - z(threshold))`` with ``z(x) = (log x - mean) / std``.

    The scores are modelled as log-normal with the statistics of :class:`AnomalyScoreDistribution`
    (``mean``/``std`` of log image scores for image scores, of log pixel scores for maps). Both the
    scores and the threshold are standardised and the threshold is subtracted, so the standard
    normal CDF ``Phi`` maps the threshold to 0.5: ``result >= 0.5`` holds exactly when
    ``targets >= threshold`` (values within rounding of 0.5 are kept on their side), and order is
    preserved (far tails saturate to 0 or 1 in float32). The mean cancels in the difference; it is
    still part of the documented standardisation.

    Args:
        targets: positive scores of any shape, e.g. image scores (B,) or anomaly maps (B, 1, H, W).
        threshold: positive raw threshold, a number or 0-dim tensor.
        mean: mean of the log scores.
        std: standard deviation of the log scores, > 0.

    Returns:
        A new tensor shaped like ``targets`` (its floating dtype, float32 for integer input).
        ``targets`` is not modified.

    Raises:
        TypeError: non-tensor targets or non-numeric statistics.
        ValueError: NaN/infinite values, non-positive scores or threshold, or ``std <= 0``.

    Example:
        >>> normalize_cdf(torch.tensor([1.0, 2.0, 4.0]), threshold=2.0, mean=0.0, std=math.log(2.0))
        tensor([0.1587, 0.5000, 0.8413])
    """
    check_scores(targets, "targets")
    threshold = check_finite_number(threshold, "threshold")
    mean, std = check_finite_number(mean, "mean"), check_finite_number(std, "std")
    if not std > 0:
        raise ValueError(f"CDF normalisation needs std > 0, got {std} (statistics of fewer than two distinct scores)")
    if not threshold > 0:
        raise ValueError(f"CDF normalisation needs a positive threshold (log-normal scores), got {threshold}")
    if targets.numel() > 0 and bool((targets <= 0).any()):
        raise ValueError(
            f"CDF normalisation needs positive targets (log-normal scores), got minimum {float(targets.min())}"
        )
    dtype = targets.dtype if targets.is_floating_point() else torch.float32
    shifted = standardize_log(targets, mean, std) - (math.log(threshold) - mean) / std
    # Phi(x) = erfc(-x / sqrt 2) / 2, accurate in both tails.
    normalized = (0.5 * torch.special.erfc(-shifted / math.sqrt(2.0))).to(dtype)
    return pin_to_threshold_side(normalized, targets.detach().to(torch.float64) >= threshold)
