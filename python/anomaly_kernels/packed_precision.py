"""Symmetric matrices stored as their upper triangles: half the memory of PaDiM's precisions.

A symmetric C x C matrix M is packed as its upper triangle row by row, ``C (C + 1) / 2``
entries: ``M[0, 0], M[0, 1], …, M[0, C-1], M[1, 1], …, M[C-1, C-1]`` (the order of
``torch.triu_indices``). A stack of P matrices is then a (P, C (C + 1) / 2) tensor: for PaDiM
with wide_resnet50 at 256 px (P = 4096, C = 550, float32) 2.48 GB instead of 4.96 GB.
:func:`anomaly_kernels.ops.mahalanobis` reads packed precisions in place on every device, and
:func:`anomaly_kernels.ops.gaussian_fit` writes them with ``packed=True``; the native kernels share
the layout's definition in ``csrc/common/packed_triangle.h``.

Example:
    >>> m = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    >>> pack_upper_triangle(m)
    tensor([1., 2., 3., 4., 5., 6.])
    >>> torch.equal(unpack_upper_triangle(pack_upper_triangle(m)), m)
    True
"""

from __future__ import annotations

import math

import torch


def packed_length(channels: int) -> int:
    """Entries of one packed C x C matrix: ``C (C + 1) / 2``."""
    return channels * (channels + 1) // 2


def channels_of_packed(length: int) -> int:
    """The C of a packed matrix of ``length`` entries.

    Raises:
        ValueError: ``length`` is not C (C + 1) / 2 for any C >= 1.
    """
    channels = (math.isqrt(8 * length + 1) - 1) // 2 if length >= 1 else 0
    if channels < 1 or packed_length(channels) != length:
        raise ValueError(
            f"a packed symmetric matrix has C*(C+1)/2 entries (1, 3, 6, 10, ...), got a last dimension of {length}"
        )
    return channels


def packed_index(channels: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(C, C) int64: the packed position of entry (i, j), that of (min(i, j), max(i, j)).

    ``packed[..., packed_index(C)]`` is the full symmetric matrix; the index is an ordinary
    gather, so the unpacking also exports to ONNX.
    """
    rows = torch.arange(channels, device=device)
    low, high = torch.minimum(rows[:, None], rows[None, :]), torch.maximum(rows[:, None], rows[None, :])
    # Row i starts at i*C - i*(i-1)/2 (C entries before it, minus the i*(i-1)/2 left of the diagonals).
    return low * channels - low * (low - 1) // 2 + (high - low)


def pack_upper_triangle(matrices: torch.Tensor) -> torch.Tensor:
    """(…, C, C) → (…, C (C + 1) / 2): the upper triangles, row by row (a new tensor).

    The entries below the diagonal are not read: the matrices are taken to be symmetric.

    Raises:
        ValueError: fewer than 2 dimensions or not square.
    """
    if matrices.dim() < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"matrices must be (..., C, C), got shape {tuple(matrices.shape)}")
    channels = matrices.shape[-1]
    rows, columns = torch.triu_indices(channels, channels, device=matrices.device)
    return matrices.flatten(-2).index_select(-1, rows * channels + columns)


def unpack_upper_triangle(packed: torch.Tensor) -> torch.Tensor:
    """(…, C (C + 1) / 2) → (…, C, C): the symmetric matrices, each entry mirrored (a new tensor).

    Raises:
        ValueError: no dimension, or a last dimension that is not C (C + 1) / 2.
    """
    if packed.dim() < 1:
        raise ValueError("packed must have at least one dimension (..., C*(C+1)/2), got a 0-d tensor")
    channels = channels_of_packed(packed.shape[-1])
    return packed[..., packed_index(channels, packed.device)]
