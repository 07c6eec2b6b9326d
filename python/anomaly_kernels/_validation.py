"""Input checks shared by the components."""

from __future__ import annotations

import torch


def all_finite(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` holds no NaN or infinity.

    A float64 sum propagates any NaN or infinity and reads the data once without the full-size
    boolean temporary of ``torch.isfinite(tensor).all()`` (which, for a large memory bank, costs
    more than the work it guards). Only when the sum is not finite is the exact check run, so an
    overflowing sum of finite values is never reported as bad input.
    """
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    if bool(torch.isfinite(tensor.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(tensor).all())


def check_floating_2d(tensor: torch.Tensor, name: str, expected_columns: int | None = None) -> None:
    """Raise TypeError/ValueError naming ``name`` unless ``tensor`` is a floating (N, D) tensor
    (with ``expected_columns`` columns, when given)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(tensor.shape)}")
    if expected_columns is not None and tensor.shape[1] != expected_columns:
        raise ValueError(
            f"{name} must have {expected_columns} columns (the fitted dimension), got shape {tuple(tensor.shape)}"
        )
