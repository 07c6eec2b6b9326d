"""The package's operators on a simulated GPU: each function takes the operator schema's
arguments (CPU tensors), does what its CUDA glue file does (contiguous inputs, the same early
returns for empty outputs, the same in-place updates) and calls the simulated launcher.

``OPERATORS`` maps an operator name to its simulated form; the conformance table's samples run
through it in ``tests/ops/test_cuda_simulated.py``. ``gaussian_fit`` has no entry: its CUDA
kernel is written with torch calls (``batched_gaussian_fit.py``), not in ``csrc/cuda``.
"""

from __future__ import annotations

import torch

from cuda_sim import kernels
from cuda_sim.kernels import H100_LIKE, Device


def banded_resample2d(input, start_y, weights_y, start_x, weights_x, device: Device = H100_LIKE):
    b, c = input.shape[:2]
    if b * c * start_y.numel() * start_x.numel() == 0:
        return input.new_zeros(b, c, start_y.numel(), start_x.numel())
    bands = [t.contiguous() for t in (start_y, weights_y, start_x, weights_x)]
    return kernels.banded_resample2d(input.contiguous(), *bands, device=device)


def kcenter_greedy_(features, min_distances, nearest, centers, begin, end, pick=True, prune=True,
                    device: Device = H100_LIKE, **launch):
    if begin == end:
        return None
    kind, where, value = kernels.kcenter_greedy_(
        features.contiguous(), min_distances, nearest, centers, begin, end, pick, prune, device=device, **launch
    )
    if kind != 0:
        raise ValueError(f"kcenter_greedy_: device error {kind} at {where} (value {value})")
    return None


def kcenter_step_(features, min_distances, center, device: Device = H100_LIKE):
    return torch.tensor(kernels.kcenter_step_(features.contiguous(), min_distances, int(center), device=device))


def kcenter_step_to_(features, min_distances, center_row, device: Device = H100_LIKE):
    row = center_row.contiguous()
    return torch.tensor(kernels.kcenter_step_(features.contiguous(), min_distances, None, row, device=device))


def kde_log_sum_exp(queries, dataset, device: Device = H100_LIKE):
    if queries.shape[0] == 0:
        return queries.new_empty(0)
    return kernels.kde_log_sum_exp(queries.contiguous(), dataset.contiguous(), device=device)


def mahalanobis(embedding, mean, precision, device: Device = H100_LIKE, group: int = 0, streamed: bool = True):
    b, c, h, w = embedding.shape
    if b * h * w == 0:
        return embedding.new_empty(b, 1, h, w)
    if c == 0:
        return embedding.new_zeros(b, 1, h, w)
    e, m, p = embedding.contiguous(), mean.contiguous(), precision.contiguous()
    return kernels.mahalanobis(e, m, p, group=group, device=device, streamed=streamed).reshape(b, 1, h, w)


def separable_blur2d(input, kernel_y, kernel_x, border_type="reflect", same_padding=True,
                     device: Device = H100_LIKE, tile_rows: int = 0):
    b, c, h, w = input.shape
    ky, kx = kernel_y.numel(), kernel_x.numel()
    out_shape = (b, c, h, w) if same_padding else (b, c, h - ky + 1, w - kx + 1)
    if input.numel() == 0 or 0 in out_shape:
        return input.new_zeros(out_shape)
    return kernels.separable_blur2d(
        input.contiguous(), kernel_y.contiguous(), kernel_x.contiguous(), border_type, same_padding,
        tile_rows=tile_rows, device=device,
    )


def sparse_sign_projection(input, crow_indices, col_indices, signs, scale, device: Device = H100_LIKE, slab_width: int = 0):
    # slab_width: what ANOMALY_KERNELS_PROJECTION_SLAB sets on a GPU (0: the device's choice).
    n, k = input.shape[0], crow_indices.numel() - 1
    if n == 0 or k == 0:
        return input.new_zeros(n, k)
    pattern = [t.contiguous() for t in (crow_indices, col_indices, signs)]
    return kernels.sparse_sign_projection(input.contiguous(), *pattern, float(scale), slab_width, device=device)


OPERATORS = {
    "banded_resample2d": banded_resample2d,
    "kcenter_greedy_": kcenter_greedy_,
    "kcenter_step_": kcenter_step_,
    "kcenter_step_to_": kcenter_step_to_,
    "kde_log_sum_exp": kde_log_sum_exp,
    "mahalanobis": mahalanobis,
    "separable_blur2d": separable_blur2d,
    "sparse_sign_projection": sparse_sign_projection,
}
