"""Input checks shared by the components."""

from __future__ import annotations

import torch


def all_finite(tensor: torch.Tensor, chunk_elements: int = 1 << 24) -> bool:
    """True when ``tensor`` holds no NaN or infinity.

    A sum in the tensor's own dtype propagates any NaN or infinity and reads the data once with
    no full-size temporary (``torch.isfinite(tensor).all()`` allocates an N x D boolean tensor,
    and a float64 sum an N x D float64 copy: for a large memory bank either costs more than the
    work it guards). Only when the sum is not finite (bad input, or an overflowing sum of finite
    values) is the exact check run, chunk by chunk.
    """
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    if bool(torch.isfinite(tensor.sum())):
        return True
    flat = tensor.reshape(-1)
    return all(bool(torch.isfinite(chunk).all()) for chunk in flat.split(chunk_elements))


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
