"""Plain PyTorch algorithm of every native operator: the oracle of tests and benchmarks.

Each function has the signature and semantics of its namesake in :mod:`anomaly_kernels.ops`
and is written for clarity, not speed (it materialises the temporaries the kernels avoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anomaly_kernels.components.filters.blur import same_padding


def kcenter_step_(features: torch.Tensor, min_distances: torch.Tensor, center) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.kcenter_step_` (allocates an (N, D) temporary)."""
    return kcenter_step_to_(features, min_distances, features[int(center)])


def kcenter_greedy_(
    features: torch.Tensor,
    min_distances: torch.Tensor,
    nearest: torch.Tensor,
    centers: torch.Tensor,
    begin: int,
    end: int,
    pick: bool = True,
    prune: bool = True,
) -> None:
    """Reference of :func:`anomaly_kernels.ops.kcenter_greedy_` (never prunes: same result)."""
    rows = features.float()  # bfloat16 rows are measured in float32, as the kernels do
    for t in range(begin, end):
        distances = torch.linalg.vector_norm(rows - rows[centers[t]], dim=1)
        closer = distances < min_distances
        nearest[closer] = t
        min_distances[closer] = distances[closer]
        if pick:
            centers[t + 1] = torch.argmax(min_distances)


def sparse_sign_projection(
    input: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor, signs: torch.Tensor, scale: float
) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.sparse_sign_projection`: materialise the dense
    (K, D) matrix and multiply (K * D multiply-adds per input row)."""
    rows = crow_indices.numel() - 1
    row_of_entry = torch.repeat_interleave(torch.arange(rows, device=input.device), crow_indices.diff())
    matrix = torch.zeros(rows, input.shape[1], dtype=input.dtype, device=input.device)
    matrix[row_of_entry, col_indices] = signs.to(input.dtype) * scale
    return input @ matrix.T


def kde_log_sum_exp(queries: torch.Tensor, dataset: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.kde_log_sum_exp`: the full (M, N) distance block."""
    distances = torch.cdist(queries, dataset, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.logsumexp(-0.5 * distances.square(), dim=1)


def _upper_triangles(matrices: torch.Tensor) -> torch.Tensor:
    """(P, C, C) -> (P, C*(C+1)/2): the entries on and above the diagonal, row by row."""
    rows, columns = torch.triu_indices(matrices.shape[-1], matrices.shape[-1], device=matrices.device)
    return matrices[:, rows, columns]


def _symmetric_from_upper(packed: torch.Tensor, channels: int) -> torch.Tensor:
    """(P, C*(C+1)/2) upper triangles, row by row -> (P, C, C) symmetric matrices."""
    rows, columns = torch.triu_indices(channels, channels, device=packed.device)
    full = packed.new_zeros(packed.shape[0], channels, channels)
    full[:, columns, rows] = packed
    full[:, rows, columns] = packed
    return full


def gaussian_fit(embedding: torch.Tensor, ridge: float = 0.01, packed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`anomaly_kernels.ops.gaussian_fit`: batched float64 covariance
    (P, C, C) by one batched product, batched Cholesky, ``cholesky_inverse`` (then the upper
    triangles when packed)."""
    b, c, h, w = embedding.shape
    samples = embedding.reshape(b, c, h * w).to(torch.float64)
    mean = samples.mean(dim=0)
    centred = (samples - mean).permute(2, 1, 0)  # (P, C, B)
    covariance = centred @ centred.transpose(1, 2) / (b - 1)
    covariance += ridge * torch.eye(c, dtype=torch.float64, device=embedding.device)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if bool((info != 0).any()):
        position = int(torch.nonzero(info)[0])
        raise RuntimeError(f"the covariance at position {position} is not positive definite")
    precision = torch.cholesky_inverse(factor)
    if packed:
        precision = _upper_triangles(precision)
    return mean.to(embedding.dtype), precision.to(embedding.dtype)


def gaussian_fit_per_position(embedding: torch.Tensor, ridge: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """The original (0.3.x) form of the PaDiM fit: a Python loop over positions building each
    covariance, then one batched ``torch.linalg.inv``. Kept as the baseline users know."""
    b, c, h, w = embedding.shape
    samples = embedding.reshape(b, c, h * w)
    mean = samples.mean(dim=0)
    covariance = torch.empty(h * w, c, c, dtype=embedding.dtype, device=embedding.device)
    identity = torch.eye(c, dtype=embedding.dtype, device=embedding.device)
    for position in range(h * w):
        centred = samples[:, :, position] - mean[:, position]
        covariance[position] = centred.T @ centred / (b - 1) + ridge * identity
    return mean, torch.linalg.inv(covariance)


def mahalanobis(embedding: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.mahalanobis`: the batched-product form, which
    materialises (P, B, C) temporaries twice (and, for packed precisions, the full matrices)."""
    b, c, h, w = embedding.shape
    if precision.dim() == 2:
        precision = _symmetric_from_upper(precision, c)
    delta = (embedding.reshape(b, c, h * w) - mean).permute(2, 0, 1)  # (P, B, C)
    squared = (torch.bmm(delta, precision) * delta).sum(dim=2)  # (P, B)
    return squared.clamp_min(0).sqrt().T.reshape(b, 1, h, w)


def kcenter_step_to_(features: torch.Tensor, min_distances: torch.Tensor, center_row: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.kcenter_step_to_`."""
    distances = torch.linalg.vector_norm(features - center_row, dim=1)
    torch.minimum(min_distances, distances, out=min_distances)
    return torch.argmax(min_distances)  # first maximal index, as documented by torch


def band_to_dense(start: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """The (outputs, size) matrix of a band: row i holds weights[i] from column start[i]."""
    taps = weights.shape[1]
    dense = weights.new_zeros(weights.shape[0], size)
    columns = start[:, None] + torch.arange(taps, device=start.device)
    return dense.scatter_(1, columns, weights)


def banded_resample2d(input, start_y, weights_y, start_x, weights_x) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.banded_resample2d`: dense matrices on both axes."""
    a_y = band_to_dense(start_y, weights_y, input.shape[2])
    a_x = band_to_dense(start_x, weights_x, input.shape[3])
    return torch.einsum("yh,bchw,xw->bcyx", a_y, input, a_x)


def separable_blur2d(
    input: torch.Tensor,
    kernel_y: torch.Tensor,
    kernel_x: torch.Tensor,
    border_type: str = "reflect",
    padding: str = "same",
) -> torch.Tensor:
    """Reference of :func:`anomaly_kernels.ops.separable_blur2d`: pad, then a full 2-D depthwise
    convolution with the outer-product kernel (Ky * Kx multiply-adds per sample)."""
    channels = input.shape[1]
    if padding == "same":
        top, bottom = same_padding(kernel_y.numel())
        left, right = same_padding(kernel_x.numel())
        input = F.pad(input, (left, right, top, bottom), mode=border_type)
    kernel = torch.outer(kernel_y, kernel_x).expand(channels, 1, -1, -1)
    return F.conv2d(input, kernel, groups=channels)


def kcenter_greedy(features: torch.Tensor, coreset_size: int, start_index: int) -> torch.Tensor:
    """Plain k-center greedy: ``start_index`` first, then ``coreset_size - 1`` farthest-point picks.

    Args:
        features: (N, D) rows the distances are measured on.
        coreset_size: number of indices to return (at least 1).
        start_index: the first center.

    Returns:
        (coreset_size,) int64 indices in selection order (on the features' device).
    """
    min_distances = torch.full((features.shape[0],), float("inf"), dtype=features.dtype, device=features.device)
    chosen = [torch.tensor(start_index, device=features.device)]
    for _ in range(coreset_size - 1):
        chosen.append(kcenter_step_(features, min_distances, chosen[-1]))
    return torch.stack(chosen)
