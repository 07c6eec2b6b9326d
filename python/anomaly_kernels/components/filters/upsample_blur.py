"""Upsampling followed by a Gaussian blur, folded into one banded separable pass.

Anomaly maps are computed on a coarse grid (e.g. 28 x 28 patches), upsampled to the image size
and blurred with sigma 4. Both steps are linear and separable, so along each axis their
composition is one matrix with a short band of non-zeros per output: the native
:func:`anomaly_kernels.ops.banded_resample2d` applies it without the full-size intermediate.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F

from anomaly_kernels import ops
from anomaly_kernels.components.filters.blur import gaussian_kernel1d, same_padding

MODES = ("nearest", "bilinear")


def _interpolation_matrix(size_in: int, size_out: int, mode: str) -> torch.Tensor:
    """(size_out, size_in): what F.interpolate does along one axis (align_corners=False)."""
    eye = torch.eye(size_in, dtype=torch.float64)[None, None]
    options = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(eye, size=(size_out, size_in), mode=mode, **options)[0, 0]


def _blur_matrix(size: int, kernel: torch.Tensor, border_type: str) -> torch.Tensor:
    """(size, size): a "same" correlation with ``kernel`` and F.pad's ``border_type`` along one axis."""
    before, _ = same_padding(kernel.numel())
    index = ops.border_index(size + kernel.numel() - 1, size, before, border_type, "cpu")
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for tap in range(kernel.numel()):
        source = index[tap : tap + size]
        keep = source >= 0
        matrix[torch.arange(size)[keep], source[keep]] += kernel[tap]
    return matrix


def _to_band(matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shortest common band (start (rows,), weights (rows, L)) holding every non-zero of ``matrix``."""
    rows, columns = matrix.shape
    nonzero = matrix != 0
    has_any = nonzero.any(dim=1)
    positions = torch.arange(columns).expand(rows, columns)
    first = torch.where(nonzero, positions, columns).amin(dim=1)
    last = torch.where(nonzero, positions, -1).amax(dim=1)
    taps = int((last - first + 1)[has_any].max()) if bool(has_any.any()) else 1
    start = torch.where(has_any, first, 0).clamp(max=columns - taps)
    weights = matrix.gather(1, start[:, None] + torch.arange(taps))
    return start, weights


@lru_cache(maxsize=32)
def upsample_blur_band(
    size_in: int, size_out: int, mode: str, kernel_size: int, sigma: float, border_type: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Band (start (size_out,), float64 weights (size_out, L)) of upsample-then-blur on one axis."""
    kernel = gaussian_kernel1d(kernel_size, sigma, torch.float64)
    return _to_band(_blur_matrix(size_out, kernel, border_type) @ _interpolation_matrix(size_in, size_out, mode))


@lru_cache(maxsize=32)
def _band_on(
    device: torch.device, dtype: torch.dtype, size_in: int, size_out: int, mode: str, kernel_size: int,
    sigma: float, border_type: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    # Kept on the device: copying the band from host memory at every call would cost a
    # synchronous transfer, 10x the fused kernel's own time on a GPU.
    start, weights = upsample_blur_band(size_in, size_out, mode, kernel_size, sigma, border_type)
    return start.to(device), weights.to(device=device, dtype=dtype)


def upsample_blur2d(
    maps: torch.Tensor,
    size: Tuple[int, int],
    kernel_size: int = 33,
    sigma: float = 4.0,
    mode: str = "bilinear",
    border_type: str = "reflect",
) -> torch.Tensor:
    """``GaussianBlur2d(kernel_size, sigma)(F.interpolate(maps, size, mode))`` in one pass.

    Args:
        maps: (B, C, h, w) float32 or float64 maps on the coarse grid.
        size: output (H, W).
        kernel_size: odd number of Gaussian taps on the output grid.
        sigma: Gaussian standard deviation in output pixels, positive.
        mode: "bilinear" (``align_corners=False``) or "nearest", as ``F.interpolate``.
        border_type: blur border handling, as ``GaussianBlur2d``.

    Returns:
        (B, C, H, W) maps, equal to the two-step result up to float rounding.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if border_type not in ops.BORDER_TYPES:
        raise ValueError(f"border_type must be one of {ops.BORDER_TYPES}, got {border_type!r}")
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        raise ValueError(f"maps must be a 4-D (B, C, h, w) tensor, got {getattr(maps, 'shape', maps)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a pair of positive ints (H, W), got {size!r}")
    height, width = int(size[0]), int(size[1])
    dtype = maps.dtype if maps.dtype == torch.float64 else torch.float32
    (start_y, weights_y), (start_x, weights_x) = [
        _band_on(maps.device, dtype, maps.shape[axis], out, mode, kernel_size, float(sigma), border_type)
        for axis, out in ((2, height), (3, width))
    ]
    # The operator itself, not ops.banded_resample2d: these bands are in range by construction,
    # and checking a CUDA band's starts means reading them back (a synchronisation per axis, ten
    # times the fused kernel's own time).
    x = maps if maps.dtype == dtype else maps.to(dtype)
    out = torch.ops.anomaly_kernels.banded_resample2d.default(x, start_y, weights_y, start_x, weights_x)
    return out if out.dtype == maps.dtype else out.to(maps.dtype)
