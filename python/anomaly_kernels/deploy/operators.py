"""Standard-operator forms of the native operators that scoring uses, for ONNX export.

An exported inference graph calls the native operators (``torch.ops.anomaly_kernels.*``), which
only this package's library can run. For ONNX each of them is replaced, in the traced program,
by the plain PyTorch form below: :data:`STANDARD_FORMS` is the decomposition table given to
``ExportedProgram.run_decompositions``. Every form is built from operations with an ONNX
counterpart (MatMul, ScatterElements, ReduceSum, ReduceLogSumExp, Sqrt), so ONNX Runtime runs
the result without a custom library. The forms compute the same sums in another order: they
agree with the kernels to float32 rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from anomaly_kernels.packed_precision import packed_index


def band_to_matrix(start: torch.Tensor, weights: torch.Tensor, size_in: int) -> torch.Tensor:
    """Dense (size_out, size_in) matrix of a band: row ``i`` holds ``weights[i]`` from column ``start[i]``.

    Args:
        start: (size_out,) int64 first input sample of each output sample.
        weights: (size_out, L) weights of the ``L`` consecutive input samples.
        size_in: number of input samples.
    """
    columns = start[:, None] + torch.arange(weights.shape[1], device=start.device)
    matrix = torch.zeros(start.shape[0], size_in, dtype=weights.dtype, device=weights.device)
    return matrix.scatter(1, columns, weights)


def banded_resample2d(
    input: torch.Tensor, start_y: torch.Tensor, weights_y: torch.Tensor, start_x: torch.Tensor, weights_x: torch.Tensor
) -> torch.Tensor:
    """:func:`anomaly_kernels.ops.banded_resample2d` as two matrix products: ``M_y @ input @ M_xᵀ``.

    The banded operator is a separable linear map; its dense matrices are small (output size ×
    coarse input size, e.g. 256 × 64), so the products cost little and lower to ONNX MatMul.

    Args:
        input: (B, C, h, w).
        start_y, weights_y: (H,), (H, L_y) band along the rows.
        start_x, weights_x: (W,), (W, L_x) band along the columns.

    Returns:
        (B, C, H, W).
    """
    rows = band_to_matrix(start_y, weights_y, input.shape[2])
    columns = band_to_matrix(start_x, weights_x, input.shape[3])
    return torch.matmul(torch.matmul(rows, input), columns.T)


def mahalanobis(embedding: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """:func:`anomaly_kernels.ops.mahalanobis` as batched products over the positions.

    ``δ`` (positions, B, C) is multiplied by each position's precision (one batched MatMul),
    multiplied by ``δ`` again and summed over the channels; negative forms (rounding) clamp to 0.
    Memory: the (positions, B, C) differences, which the native kernel avoids. Packed
    precisions are unpacked by one gather (a full (H*W, C, C) temporary).

    Args:
        embedding: (B, C, H, W).
        mean: (C, H*W).
        precision: (H*W, C, C), or packed (H*W, C*(C+1)/2).

    Returns:
        (B, 1, H, W) distances.
    """
    batch, channels, height, width = embedding.shape
    if precision.dim() == 2:
        precision = precision[:, packed_index(channels, precision.device)]
    centred = embedding.reshape(batch, channels, height * width).permute(2, 0, 1) - mean.T[:, None, :]
    forms = (torch.matmul(centred, precision) * centred).sum(dim=-1)  # (H*W, B)
    return forms.clamp(min=0).sqrt().T.reshape(batch, 1, height, width)


def kde_log_sum_exp(queries: torch.Tensor, dataset: torch.Tensor) -> torch.Tensor:
    """:func:`anomaly_kernels.ops.kde_log_sum_exp` as a log-sum-exp over the (M, N) block.

    The squared distances come from the differences themselves (not the expanded
    ``|q|² + |d|² − 2 q·d``, which cancels badly for near points), at the cost of an (M, N, D)
    temporary: small for DFKDE's few projected dimensions.

    Args:
        queries: (M, D).
        dataset: (N, D).

    Returns:
        (M,) ``log Σ_j exp(−½ ‖queries[i] − dataset[j]‖²)``.
    """
    squared = (queries[:, None, :] - dataset[None, :, :]).square().sum(dim=-1)
    return torch.logsumexp(-0.5 * squared, dim=1)


# The native operators an inference graph may contain, and the form that replaces each in ONNX.
STANDARD_FORMS: Dict[torch._ops.OpOverload, Callable[..., torch.Tensor]] = {
    torch.ops.anomaly_kernels.banded_resample2d.default: banded_resample2d,
    torch.ops.anomaly_kernels.mahalanobis.default: mahalanobis,
    torch.ops.anomaly_kernels.kde_log_sum_exp.default: kde_log_sum_exp,
}
