"""PaDiM's per-position Gaussians from batched ``torch.linalg`` calls: the CUDA kernel of
:func:`anomaly_kernels.ops.gaussian_fit` (registered for the ``cuda`` dispatch key in
:mod:`anomaly_kernels.ops`), and a route any device can run.

On a GPU the per-position work is best left to cuBLAS / cuSOLVER's batched routines; what this
module adds over one big batched call is bounded memory and fewer operations:

- Positions are processed in chunks, so the float64 temporaries stay near ``max_temporary_bytes``
  whatever the map size (one batched call over 4,096 positions at C = 550 would hold several
  (P, C, C) float64 tensors of 9.9 GB each).
- With no more images than channels (B <= C) and a positive ridge r, the covariance
  r I + Y^T Y (Y = centred images / sqrt(B - 1), shape (B, C)) is inverted through the (B, B)
  image-space system (Woodbury identity)::

      (r I + Y^T Y)^-1 = (I - W^T W) / r,   W = L^-1 Y,   L L^T = r I + Y Y^T

  a (B, B) Cholesky factor, the inverse of that small factor and two batched products instead
  of a (C, C) factor and inverse. All of it runs in float64: the subtraction costs about
  log10(1 + variance / r) of float64's digits in the data's directions, far from the float32
  precision of the output (in float32 it would cost as many of float32's 7). The (C, C) product
  W^T W with its rank-B inner dimension is one batched float64 GEMM per chunk and the only
  large step; the identity and the 1 / r scaling are folded into it (``baddbmm``).
- Precisions are exactly symmetric: the upper triangle is mirrored onto the lower one while the
  result is written out (a batched GEMM need not give bit-equal (i, j) and (j, i) entries), or
  written alone when packed (:mod:`anomaly_kernels.packed_precision`): then no (P, C, C) tensor
  exists at any time, only one chunk's.
- A non-positive-definite covariance is detected without a host synchronisation per chunk: the
  Cholesky status of every chunk is kept on the device and read once at the end.

The CPU kernel (csrc/cpu/gaussian_fit.cpp) takes the same two routes, position by position.
"""

from __future__ import annotations

import math

import torch

from anomaly_kernels.packed_precision import packed_length

# Float64 working memory per chunk of positions.
DEFAULT_MAX_TEMPORARY_BYTES = 1 << 30


def uses_image_space(images: int, channels: int, ridge: float) -> bool:
    """Whether the (B, B) image-space route is taken: B <= C and a positive ridge."""
    return ridge > 0 and images <= channels


def batched_gaussian_fit(
    embedding: torch.Tensor,
    ridge: float = 0.01,
    max_temporary_bytes: int = DEFAULT_MAX_TEMPORARY_BYTES,
    packed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse covariance at every position, in chunks of positions.

    Args:
        embedding: (B, C, H, W) float32 or float64, B >= 2 (checked by the caller).
        ridge: added to every covariance's diagonal, >= 0.
        max_temporary_bytes: float64 working memory per chunk of positions (at least one
            position per chunk).
        packed: return the precisions' upper triangles, (H*W, C*(C+1)/2).

    Returns:
        ``(mean (C, H*W), precision (H*W, C, C) or packed (H*W, C*(C+1)/2))`` in the
        embedding's dtype, on its device; every precision is exactly symmetric.

    Raises:
        RuntimeError: a covariance is not positive definite (the first such position is named).
    """
    b, c, h, w = embedding.shape
    p = h * w
    dtype, device = embedding.dtype, embedding.device
    samples = embedding.reshape(b, c, p)
    # Filled chunk by chunk: a mean over the whole embedding in float64 would first copy all of it
    # to float64 (6.6 GiB for 391 x 550 x 64 x 64), twice the embedding's own size.
    mean = torch.empty(c, p, dtype=torch.float64, device=device)
    precision = torch.empty((p, packed_length(c)) if packed else (p, c, c), dtype=dtype, device=device)
    if p == 0:
        return mean.to(dtype), precision
    image_space = uses_image_space(b, c, ridge)
    # Per position, float64 unless noted: the centred samples, then per route the (B, B) system,
    # its factor and inverse, W (B, C) and the (C, C) result; or the (C, C) covariance, factor
    # and inverse. Plus the (C, C) result in the output dtype before mirroring.
    if image_space:
        per_position = 8 * (3 * b * c + 3 * b * b + c * c)
    else:
        per_position = 8 * (b * c + 3 * c * c)
    per_position += precision.element_size() * c * c
    chunk = max(1, max_temporary_bytes // per_position)
    if packed:  # flat indices of the upper triangle, row by row (built on the device: no synchronisation)
        rows, columns = torch.triu_indices(c, c, device=device)
        upper_entries = rows * c + columns
    else:
        upper = torch.ones(c, c, dtype=torch.bool, device=device).triu_()
    status = torch.zeros(p, dtype=torch.int32, device=device)  # Cholesky info per position
    for start in range(0, p, chunk):
        stop = min(p, start + chunk)
        # One float64 copy of the chunk, (positions, B, C), centred in place.
        centred = torch.empty(stop - start, b, c, dtype=torch.float64, device=device)
        centred.copy_(samples[:, :, start:stop].permute(2, 0, 1))
        chunk_mean = centred.mean(dim=1)  # (positions, C)
        mean[:, start:stop] = chunk_mean.T
        centred.sub_(chunk_mean[:, None, :])
        del chunk_mean
        if image_space:
            result = _invert_in_image_space(centred, ridge, status[start:stop])
        else:
            result = _invert_in_feature_space(centred, ridge, status[start:stop])
        del centred
        if result.dtype != dtype:
            result = result.to(dtype)
        if packed:
            torch.index_select(result.flatten(1), 1, upper_entries, out=precision[start:stop])
        else:
            # The upper triangle, mirrored: exactly symmetric output.
            torch.where(upper, result, result.mT, out=precision[start:stop])
        del result
    failed = torch.nonzero(status)  # the one host synchronisation
    if failed.numel():
        raise RuntimeError(
            f"the covariance at position {int(failed[0])} is not positive definite "
            "(non-finite or degenerate features?)"
        )
    return mean.to(dtype), precision


def _invert_in_feature_space(centred: torch.Tensor, ridge: float, status: torch.Tensor) -> torch.Tensor:
    """(ridge I + X^T X / (B - 1))^-1 for centred (p, B, C) through the (C, C) Cholesky factor."""
    b, c = centred.shape[1:]
    eye = torch.eye(c, dtype=torch.float64, device=centred.device)
    covariance = torch.baddbmm(eye * ridge, centred.mT, centred, alpha=1.0 / (b - 1))
    factor, info = torch.linalg.cholesky_ex(covariance)
    status.copy_(info)
    del covariance
    # A failed factor (reported through status) would make cholesky_inverse raise without naming
    # the position: invert the identity there instead.
    factor = torch.where((info == 0)[:, None, None], factor, eye)
    return torch.cholesky_inverse(factor)


def _invert_in_image_space(centred: torch.Tensor, ridge: float, status: torch.Tensor) -> torch.Tensor:
    """The same inverse through the (B, B) system (see the module docstring)."""
    b, c = centred.shape[1:]
    scaled = centred.mul_(1.0 / math.sqrt(b - 1))  # Y (p, B, C), in place of the centred samples
    eye_b = torch.eye(b, dtype=torch.float64, device=centred.device)
    system = torch.baddbmm(eye_b * ridge, scaled, scaled.mT)  # r I + Y Y^T
    factor, info = torch.linalg.cholesky_ex(system)
    status.copy_(info)
    # L^-1 as a small (B, B) triangular solve, then W = L^-1 Y as a batched product (a batched
    # triangular solve with the (B, C) right-hand side is much slower on GPUs).
    inverse_factor = torch.linalg.solve_triangular(factor, eye_b.expand_as(factor), upper=False)
    whitened = torch.bmm(inverse_factor, scaled)  # W (p, B, C)
    eye_c = torch.eye(c, dtype=torch.float64, device=centred.device)
    # (I - W^T W) / r in one batched GEMM.
    return torch.baddbmm(eye_c / ridge, whitened.mT, whitened, alpha=-1.0 / ridge)
