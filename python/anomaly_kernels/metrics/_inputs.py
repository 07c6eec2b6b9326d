"""Input checks shared by the metrics: real-valued finite scores and binary ground truth."""

from __future__ import annotations

import math

import torch


def check_scores(scores: object, name: str = "preds") -> torch.Tensor:
    """Return ``scores`` if it is a real-valued tensor without NaN or infinity, else raise.

    Args:
        scores: anomaly scores of any shape.
        name: argument name used in error messages.

    Raises:
        TypeError: not a tensor, or a bool/complex tensor.
        ValueError: NaN or infinite entries.
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of anomaly scores, got {type(scores).__name__}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise TypeError(f"{name} must hold real-valued scores, got dtype {scores.dtype}")
    if scores.is_floating_point() and scores.numel() > 0:
        if bool(torch.isnan(scores).any()):
            raise ValueError(f"{name} must not contain NaN")
        if bool(torch.isinf(scores).any()):
            raise ValueError(f"{name} must be finite, got an infinite score")
    return scores


def check_binary_target(target: object, scores: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Return ``target`` if it holds only 0 and 1 and as many elements as ``scores``, else raise.

    Args:
        target: ground truth of any shape (bool, integer or float tensor).
        scores: the scores it labels.
        name: argument name used in error messages.

    Raises:
        TypeError: not a tensor.
        ValueError: another element count, or values other than 0 and 1.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of 0/1 labels, got {type(target).__name__}")
    if target.numel() != scores.numel():
        raise ValueError(
            f"preds and {name} must have the same number of elements, got shapes "
            f"{tuple(scores.shape)} and {tuple(target.shape)}"
        )
    if target.dtype != torch.bool and bool(((target != 0) & (target != 1)).any()):
        raise ValueError(f"{name} must hold only 0 and 1, got values {torch.unique(target).tolist()}")
    return target


def check_num_bins(num_bins: object, name: str = "num_bins") -> int | None:
    """Return ``num_bins`` (``None`` for exact mode, else an int ≥ 2), or raise an error naming ``name``."""
    if num_bins is None:
        return None
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        raise TypeError(f"{name} must be None (exact) or an int, got {num_bins!r}")
    if num_bins < 2:
        raise ValueError(f"{name} must be at least 2, got {num_bins}")
    return num_bins


def check_finite_number(value: object, name: str) -> float:
    """Return ``value`` (a real number or one-element tensor) as a finite float, or raise naming ``name``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(value.shape)}")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)
