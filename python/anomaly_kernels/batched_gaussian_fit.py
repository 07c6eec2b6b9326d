"""PaDiM's per-position Gaussians from batched ``torch.linalg`` calls: the GPU route of
:func:`anomaly_kernels.ops.gaussian_fit`.

On a GPU the per-position inverses are best left to cuBLAS / cuSOLVER's batched routines; what
this module adds over one big batched call is bounded memory and fewer operations:

- Positions are processed in chunks, so the float64 temporaries stay near ``max_temporary_bytes``
  whatever the map size (one batched call over 3,136 positions at C = 550 would hold three
  (P, C, C) float64 tensors, about 23 GB).
- With no more images than channels (B <= C) and a positive ridge r, the covariance
  r I + Y^T Y (Y = centred images / sqrt(B - 1), shape (B, C)) is inverted through the (B, B)
  image-space system (Woodbury identity)::

      (r I + Y^T Y)^-1 = (I - W^T W) / r,   W = L^-1 Y,   L L^T = r I + Y Y^T

  a (B, B) Cholesky factor, one triangular solve and one rank-B product instead of a (C, C)
  factor and inverse. The subtraction costs about log10(1 + variance / r) of float64's digits
  in the data's directions, far from the float32 precision of the output.

The CPU kernel (csrc/cpu/gaussian_fit.cpp) takes the same two routes, position by position.
"""

from __future__ import annotations

import math

import torch

# Float64 working memory per chunk of positions.
DEFAULT_MAX_TEMPORARY_BYTES = 1 << 30


def uses_image_space(images: int, channels: int, ridge: float) -> bool:
    """Whether the (B, B) image-space route is taken: B <= C and a positive ridge."""
    return ridge > 0 and images <= channels


def batched_gaussian_fit(
    embedding: torch.Tensor, ridge: float = 0.01, max_temporary_bytes: int = DEFAULT_MAX_TEMPORARY_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse covariance at every position, in chunks of positions.

    Args:
        embedding: (B, C, H, W) float32 or float64, B >= 2 (checked by the caller).
        ridge: added to every covariance's diagonal, >= 0.
        max_temporary_bytes: float64 working memory per chunk of positions (at least one
            position per chunk).

    Returns:
        ``(mean (C, H*W), precision (H*W, C, C))`` in the embedding's dtype, on its device.

    Raises:
        RuntimeError: a covariance is not positive definite (its position is named).
    """
    b, c, h, w = embedding.shape
    p = h * w
    samples = embedding.reshape(b, c, p)
    mean = samples.mean(dim=0, dtype=torch.float64)  # (C, P)
    precision = torch.empty(p, c, c, dtype=embedding.dtype, device=embedding.device)
    image_space = uses_image_space(b, c, ridge)
    # Per position: the centred samples (B, C) and, per route, the (B, B) or (C, C) system plus
    # the (C, C) result, all float64.
    per_position = 8 * (b * c + (b * b + b * c + c * c if image_space else 2 * c * c))
    chunk = max(1, max_temporary_bytes // per_position)
    invert = _invert_in_image_space if image_space else _invert_in_feature_space
    for start in range(0, p, chunk):
        stop = min(p, start + chunk)
        centred = (samples[:, :, start:stop].to(torch.float64) - mean[:, start:stop]).permute(2, 0, 1)  # (p, B, C)
        precision[start:stop] = invert(centred, ridge, start)
    return mean.to(embedding.dtype), precision


def _invert_in_feature_space(centred: torch.Tensor, ridge: float, first_position: int) -> torch.Tensor:
    """(ridge I + X^T X / (B - 1))^-1 for centred (p, B, C) through the (C, C) Cholesky factor."""
    b, c = centred.shape[1:]
    covariance = centred.transpose(1, 2) @ centred / (b - 1)
    covariance.diagonal(dim1=1, dim2=2).add_(ridge)
    factor = _cholesky(covariance, first_position)
    return torch.cholesky_inverse(factor)


def _invert_in_image_space(centred: torch.Tensor, ridge: float, first_position: int) -> torch.Tensor:
    """The same inverse through the (B, B) system (see the module docstring)."""
    b, c = centred.shape[1:]
    scaled = centred / math.sqrt(b - 1)  # Y (p, B, C)
    system = scaled @ scaled.transpose(1, 2)
    system.diagonal(dim1=1, dim2=2).add_(ridge)
    factor = _cholesky(system, first_position)
    whitened = torch.linalg.solve_triangular(factor, scaled, upper=False)  # W = L^-1 Y
    result = whitened.transpose(1, 2) @ whitened
    result.neg_().diagonal(dim1=1, dim2=2).add_(1.0)
    return result.div_(ridge)


def _cholesky(matrices: torch.Tensor, first_position: int) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(matrices)
    failed = torch.nonzero(info)
    if failed.numel():
        position = first_position + int(failed[0])
        raise RuntimeError(
            f"the covariance at position {position} is not positive definite (non-finite or degenerate features?)"
        )
    return factor
