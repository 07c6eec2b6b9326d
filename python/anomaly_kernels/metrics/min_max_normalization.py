"""Min-max normalisation: anomaly scores to [0, 1] with the threshold at 0.5."""

from __future__ import annotations

import torch

from anomaly_kernels.metrics._inputs import check_finite_number, check_scores
from anomaly_kernels.metrics._normalized_side import pin_to_threshold_side


def normalize_min_max(
    targets: torch.Tensor,
    threshold: float | torch.Tensor,
    min_value: float | torch.Tensor,
    max_value: float | torch.Tensor,
) -> torch.Tensor:
    """Min-max normalise anomaly scores: ``clamp((targets - threshold) / (max - min) + 0.5, 0, 1)``.

    This is the min-max normalisation of anomalib 0.3: the validation range scales the scores,
    the threshold moves to 0.5, and the result is clipped to [0, 1]. Order is preserved (clipping
    ties scores beyond ``threshold ± (max - min) / 2``) and ``result >= 0.5`` holds exactly when
    ``targets >= threshold`` (values within rounding of 0.5 are kept on their side).

    Args:
        targets: scores of any shape, e.g. image scores (B,) or anomaly maps (B, 1, H, W).
        threshold: raw threshold (image or pixel), a number or 0-dim tensor.
        min_value, max_value: running extremes of the validation scores (see :class:`MinMax`).

    Returns:
        A new tensor shaped like ``targets`` (its floating dtype, float32 for integer input).
        ``targets`` is not modified.

    Raises:
        TypeError: non-tensor targets or non-numeric statistics.
        ValueError: NaN/infinite values, or ``max_value <= min_value`` (statistics of a single value).

    Example:
        >>> normalize_min_max(torch.tensor([0.0, 2.0, 4.0, 10.0]), threshold=4.0, min_value=0.0, max_value=8.0)
        tensor([0.0000, 0.2500, 0.5000, 1.0000])
    """
    check_scores(targets, "targets")
    threshold = check_finite_number(threshold, "threshold")
    low, high = check_finite_number(min_value, "min_value"), check_finite_number(max_value, "max_value")
    if not high > low:
        raise ValueError(
            f"min-max normalisation needs max_value > min_value, got min_value={low}, max_value={high}"
        )
    dtype = targets.dtype if targets.is_floating_point() else torch.float32
    raw = targets.detach().to(torch.float64)
    normalized = torch.clamp((raw - threshold) / (high - low) + 0.5, 0.0, 1.0).to(dtype)
    return pin_to_threshold_side(normalized, raw >= threshold)
