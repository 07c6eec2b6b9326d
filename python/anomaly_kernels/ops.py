"""Python entry points of the native operators (``torch.ops.anomaly_kernels.*``).

Each function validates its arguments with errors that name the argument, the expected and the
received value, then calls the dispatcher, which picks the CPU or CUDA kernel from the tensors'
device. Fake (meta) kernels registered here let ``torch.compile(fullgraph=True)`` trace the
operators without running them. :mod:`anomaly_kernels.reference` holds the plain PyTorch
algorithm of each operator, the oracle of the tests and benchmarks.
"""

from __future__ import annotations

from typing import Union

import torch

from anomaly_kernels.batched_gaussian_fit import batched_gaussian_fit
from anomaly_kernels.packed_precision import packed_length, unpack_upper_triangle

BORDER_TYPES = ("constant", "reflect", "replicate", "circular")
PADDINGS = ("same", "valid")

# Operators are called by their overload (``.default``): resolving the overload of a packet
# costs about half a microsecond a call, as much as a small GPU kernel's launch.
_ops = torch.ops.anomaly_kernels


def _check_floating(name: str, tensor: torch.Tensor, allowed=(torch.float32, torch.float64)) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in allowed:
        names = " or ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must be {names}, got {str(tensor.dtype).replace('torch.', '')}")


def _check_same_device(name: str, tensor: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if tensor.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {tensor.device}")


# --------------------------------------------------------------------------------------------
# k-center greedy step
# --------------------------------------------------------------------------------------------
def _check_kcenter_rows(features: torch.Tensor, min_distances: torch.Tensor) -> None:
    _check_floating("features", features)
    if features.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must have at least one row and one column, got shape {tuple(features.shape)}")
    _check_floating("min_distances", min_distances, (features.dtype,))
    if min_distances.shape != (features.shape[0],):
        raise ValueError(
            f"min_distances must have shape ({features.shape[0]},), got {tuple(min_distances.shape)}"
        )
    _check_same_device("min_distances", min_distances, "features", features)


def kcenter_step_(
    features: torch.Tensor, min_distances: torch.Tensor, center: Union[int, torch.Tensor]
) -> torch.Tensor:
    """One k-center-greedy iteration, updating ``min_distances`` in place.

    For every row ``i``: ``min_distances[i] = min(min_distances[i], ||features[i] -
    features[center]||)`` (Euclidean, not squared), in one pass over ``features`` with no
    (N, D) temporary. Start from ``+inf`` distances to get plain distances to the first center.

    Args:
        features: (N, D) float32 or float64 (float32 only on CUDA).
        min_distances: (N,) contiguous, same dtype and device; updated in place.
        center: row index of the newest center, an int or a one-element int64 tensor on the
            features' device (a tensor avoids a host synchronisation on CUDA). An int is
            range-checked here and the CPU kernel checks a tensor; the CUDA kernel cannot
            raise on an out-of-range tensor index without synchronising, so it then leaves
            ``min_distances`` unchanged (never reading outside ``features``) and returns -1.

    Returns:
        0-dim int64 tensor on the features' device: the index of the largest updated distance
        (ties resolve to the smallest index); -1 for an out-of-range tensor center on CUDA.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [5.0]])
        >>> d = torch.full((3,), float("inf"))
        >>> int(kcenter_step_(x, d, 0)), d.tolist()
        (2, [0.0, 1.0, 5.0])
    """
    _check_kcenter_rows(features, min_distances)
    if isinstance(center, torch.Tensor):
        if center.numel() != 1 or center.dtype != torch.int64:
            raise ValueError(f"center must be one int64 index, got shape {tuple(center.shape)} of {center.dtype}")
        _check_same_device("center", center, "features", features)
    else:
        center = int(center)
        if not 0 <= center < features.shape[0]:
            raise ValueError(f"center must be a row index in [0, {features.shape[0]}), got {center}")
        center = torch.tensor(center, dtype=torch.int64, device=features.device)
    return _ops.kcenter_step_.default(features, min_distances, center)


@torch.library.register_fake("anomaly_kernels::kcenter_step_")
def _kcenter_step_fake(features, min_distances, center):
    return features.new_empty((), dtype=torch.int64)


def kcenter_step_to_(features: torch.Tensor, min_distances: torch.Tensor, center_row: torch.Tensor) -> torch.Tensor:
    """:func:`kcenter_step_` with the new center given as a vector rather than a row index.

    Used by the sharded selection, where the center may live on another rank.

    Args:
        features: (N, D) float32 or float64 (float32 only on CUDA).
        min_distances: (N,) contiguous, same dtype and device; updated in place.
        center_row: (D,) the new center, same dtype and device.

    Returns:
        0-dim int64 tensor: the index of the largest updated distance (ties: smallest index).
    """
    _check_kcenter_rows(features, min_distances)
    _check_floating("center_row", center_row, (features.dtype,))
    if center_row.shape != (features.shape[1],):
        raise ValueError(f"center_row must have shape ({features.shape[1]},), got {tuple(center_row.shape)}")
    _check_same_device("center_row", center_row, "features", features)
    return _ops.kcenter_step_to_.default(features, min_distances, center_row)


@torch.library.register_fake("anomaly_kernels::kcenter_step_to_")
def _kcenter_step_to_fake(features, min_distances, center_row):
    return features.new_empty((), dtype=torch.int64)


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
    """Run passes ``begin .. end-1`` of a greedy k-center selection natively, in place.

    Pass ``t`` applies center ``centers[t]``: every row's running minimum distance is lowered by
    its distance to that row, and ``nearest`` records position ``t`` for the rows it brought
    closer. With ``pick``, the farthest row afterwards (ties: smallest index) is stored in
    ``centers[t + 1]`` and becomes the next pass's center. With ``prune``, a row whose nearest
    center ``p`` satisfies ``d(centers[t], centers[p]) >= 2 * min_distance`` is not read (the
    triangle inequality proves it cannot get closer); on the CPU, once few rows are within a
    new center's reach, rows are also kept in groups by nearest center and a whole group is
    skipped when the test holds for its farthest member, so late passes touch a few groups
    instead of testing every row. The selection is the same either way.
    On CUDA all passes of a call run in one cooperative kernel (one launch per pass where the
    device cannot co-schedule the grid); the call then waits for the device once, to raise on
    bad ``centers`` or ``nearest`` entries the kernel met. With ``prune`` and ``pick`` that
    kernel also keeps the distances between the call's centers (a triangle of
    ``(end**2 - begin**2) / 2`` float32, in device scratch memory for the call, at most 1 GiB
    and 8x the bytes of ``features``): a pruned pass then tests rows against bounds derived
    from them and from its center's own nearest center, with one grid-wide barrier instead of
    two. The environment variable ``ANOMALY_KERNELS_KCENTER_TRIANGLE_BYTES`` sets another
    budget (0: none).

    Args:
        features: (N, D) float32, or bfloat16 to halve the bytes read per pass (the distances
            are then those of the bfloat16-rounded rows, still accumulated in float32).
        min_distances: (N,) float32, contiguous; distances to centers ``[0, begin)`` (``+inf``
            initially).
        nearest: (N,) int32, contiguous; position of each row's nearest center (-1 initially).
        centers: (K,) int64, contiguous; ``centers[begin .. end-1]`` must be set, and with
            ``pick`` the entries ``begin+1 .. end`` are written.
        begin, end: the passes to run, ``0 <= begin <= end <= K`` (``end < K`` with ``pick``).

    Raises:
        RuntimeError: a center index outside ``[0, N)``, or (with ``prune``) a ``nearest``
            entry outside ``[-1, end)``. On CUDA the passes stop at a bad center without
            reading outside the tensors and the error is raised when the call ends; the state
            is then unspecified.
    """
    for name, value in (("begin", begin), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    _check_floating("features", features, (torch.float32, torch.bfloat16))
    if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must be a non-empty 2-D (N, D) tensor, got shape {tuple(features.shape)}")
    n = features.shape[0]
    for name, tensor, dtype in (("min_distances", min_distances, torch.float32), ("nearest", nearest, torch.int32)):
        if tensor.dtype != dtype or tensor.shape != (n,) or not tensor.is_contiguous():
            raise ValueError(
                f"{name} must be a contiguous {str(dtype).replace('torch.', '')} tensor of shape ({n},), "
                f"got {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}"
            )
        _check_same_device(name, tensor, "features", features)
    if centers.dtype != torch.int64 or centers.dim() != 1 or not centers.is_contiguous():
        raise ValueError(f"centers must be a contiguous 1-D int64 tensor, got {tuple(centers.shape)} {centers.dtype}")
    _check_same_device("centers", centers, "features", features)
    if not 0 <= begin <= end <= centers.shape[0] or (pick and end >= centers.shape[0]):
        raise ValueError(
            f"begin and end must satisfy 0 <= begin <= end {'<' if pick else '<='} len(centers) = "
            f"{centers.shape[0]}, got begin={begin}, end={end}"
        )
    _ops.kcenter_greedy_.default(features, min_distances, nearest, centers, int(begin), int(end), bool(pick), bool(prune))


@torch.library.register_fake("anomaly_kernels::kcenter_greedy_")
def _kcenter_greedy_fake(features, min_distances, nearest, centers, begin, end, pick, prune):
    return None


# --------------------------------------------------------------------------------------------
# sparse random projection
# --------------------------------------------------------------------------------------------
def sparse_sign_projection(
    input: torch.Tensor,
    crow_indices: torch.Tensor,
    col_indices: torch.Tensor,
    signs: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``input @ R.T`` for a sparse sign matrix ``R`` (K, D) given in CSR form.

    Row ``k`` of ``R`` holds ``scale * signs[p]`` at column ``col_indices[p]`` for ``p`` in
    ``[crow_indices[k], crow_indices[k + 1])`` and zeros elsewhere. Each output is a signed sum
    of the few input columns its row selects, so the cost is ``N * nnz`` instead of ``N * K * D``
    multiply-adds and the input is read once.

    Args:
        input: (N, D) float32 or float64.
        crow_indices: (K + 1,) int64 row offsets, from 0 to ``len(col_indices)``.
        col_indices: (nnz,) int64 columns in ``[0, D)``.
        signs: (nnz,) int8, +1 or -1.
        scale: the magnitude shared by all nonzeros.

    Returns:
        (N, K) in the dtype of ``input``.
    """
    _check_floating("input", input)
    if input.dim() != 2:
        raise ValueError(f"input must be 2-D (N, D), got shape {tuple(input.shape)}")
    if crow_indices.dtype != torch.int64 or crow_indices.dim() != 1 or crow_indices.numel() < 1:
        raise ValueError(f"crow_indices must be a 1-D int64 tensor of K + 1 offsets, got {tuple(crow_indices.shape)} {crow_indices.dtype}")
    if col_indices.dtype != torch.int64 or col_indices.dim() != 1:
        raise ValueError(f"col_indices must be a 1-D int64 tensor, got {tuple(col_indices.shape)} {col_indices.dtype}")
    if signs.dtype != torch.int8 or signs.shape != col_indices.shape:
        raise ValueError(f"signs must be int8 with the shape of col_indices {tuple(col_indices.shape)}, got {tuple(signs.shape)} {signs.dtype}")
    for name, tensor in (("crow_indices", crow_indices), ("col_indices", col_indices), ("signs", signs)):
        _check_same_device(name, tensor, "input", input)
    return _ops.sparse_sign_projection.default(input, crow_indices, col_indices, signs, float(scale))


@torch.library.register_fake("anomaly_kernels::sparse_sign_projection")
def _sparse_sign_projection_fake(input, crow_indices, col_indices, signs, scale):
    return input.new_empty((input.shape[0], crow_indices.shape[0] - 1))


# --------------------------------------------------------------------------------------------
# Gaussian KDE
# --------------------------------------------------------------------------------------------
def kde_log_sum_exp(queries: torch.Tensor, dataset: torch.Tensor) -> torch.Tensor:
    """``log Σ_j exp(-½ ‖queries[i] - dataset[j]‖²)`` for every query, in one fused pass.

    The core of a Gaussian KDE in whitened coordinates: tiles of training rows are reduced
    against a running maximum, so no (M, N) block is stored and far-away queries give finite
    (very negative) values instead of ``log(0)``.

    Args:
        queries: (M, D) float32 or float64.
        dataset: (N, D), N >= 1, same dtype and device.

    Returns:
        (M,) in the queries' dtype.
    """
    _check_floating("queries", queries)
    _check_floating("dataset", dataset, (queries.dtype,))
    if dataset.dim() != 2 or dataset.shape[0] == 0:
        raise ValueError(f"dataset must be a non-empty 2-D (N, D) tensor, got shape {tuple(dataset.shape)}")
    if queries.dim() != 2 or queries.shape[1] != dataset.shape[1]:
        raise ValueError(f"queries must be 2-D (M, {dataset.shape[1]}) like dataset, got shape {tuple(queries.shape)}")
    _check_same_device("dataset", dataset, "queries", queries)
    return _ops.kde_log_sum_exp.default(queries, dataset)


@torch.library.register_fake("anomaly_kernels::kde_log_sum_exp")
def _kde_log_sum_exp_fake(queries, dataset):
    return queries.new_empty((queries.shape[0],))


# --------------------------------------------------------------------------------------------
# Gaussian fit (PaDiM statistics)
# --------------------------------------------------------------------------------------------
def gaussian_fit(
    embedding: torch.Tensor, ridge: float = 0.01, packed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse covariance of the B feature vectors at every position.

    ``precision[p] = inverse(cov_p + ridge * I)`` with ``cov_p`` the unbiased (``B - 1``)
    covariance of ``embedding[:, :, p]``; accumulated and inverted through a Cholesky factor in
    float64, returned in the embedding's dtype. On the CPU this is one native pass (no Python
    loop over positions, no (P, C, C) float64 temporaries); with no more images than channels
    (B <= C) and ``ridge > 0`` it factors the (B, B) image-space system instead of the (C, C)
    covariance (Woodbury identity: fewer operations, the same inverse to float64 rounding
    amplified by variance / ridge, far below float32 precision). The operator's CUDA kernel runs
    batched ``torch.linalg`` calls (cuBLAS / cuSOLVER) over chunks of positions, with the same
    two routes (:mod:`anomaly_kernels.batched_gaussian_fit`). Precisions are exactly symmetric.

    Args:
        embedding: (B, C, H, W) float32 or float64, B >= 2, finite.
        ridge: added to every covariance's diagonal, >= 0.
        packed: return each precision as its upper triangle row by row, (H*W, C*(C+1)/2):
            half the memory, written directly (no full temporary of all positions; see
            :mod:`anomaly_kernels.packed_precision`).

    Returns:
        ``(mean (C, H*W), precision (H*W, C, C))``, or ``(H*W, C*(C+1)/2)`` when packed.

    Raises:
        RuntimeError: a covariance is not positive definite (its position is named).
    """
    _check_floating("embedding", embedding)
    if embedding.dim() != 4:
        raise ValueError(f"embedding must be 4-D (B, C, H, W), got shape {tuple(embedding.shape)}")
    if embedding.shape[0] < 2:
        raise ValueError(f"embedding must hold at least 2 images (B >= 2), got shape {tuple(embedding.shape)}")
    if embedding.shape[1] < 1:
        raise ValueError(f"embedding must have at least one channel, got shape {tuple(embedding.shape)}")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if not isinstance(packed, bool):
        raise TypeError(f"packed must be a bool, got {type(packed).__name__}")
    return _ops.gaussian_fit.default(embedding, float(ridge), packed)


@torch.library.register_fake("anomaly_kernels::gaussian_fit")
def _gaussian_fit_fake(embedding, ridge, packed=False):
    b, c, h, w = embedding.shape
    precision_shape = (h * w, packed_length(c)) if packed else (h * w, c, c)
    return embedding.new_empty((c, h * w)), embedding.new_empty(precision_shape)


@torch.library.register_kernel("anomaly_kernels::gaussian_fit", "cuda")
def _gaussian_fit_cuda(embedding, ridge, packed=False):
    # The CUDA kernel is a sequence of cuBLAS / cuSOLVER calls (batched_gaussian_fit), registered
    # with the dispatcher so that opcheck and torch.compile see it like the native CPU kernel.
    # The checks repeat the native kernel's, for callers that reach the operator directly.
    if embedding.dim() != 4:
        raise RuntimeError(f"embedding must be 4-D (B, C, H, W), got shape {tuple(embedding.shape)}")
    if embedding.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"embedding must be float32 or float64, got {embedding.dtype}")
    if embedding.shape[0] < 2 or embedding.shape[1] < 1:
        raise RuntimeError(f"embedding must hold at least 2 images and 1 channel, got shape {tuple(embedding.shape)}")
    if not ridge >= 0:
        raise RuntimeError(f"ridge must be >= 0, got {ridge}")
    return batched_gaussian_fit(embedding, float(ridge), packed=packed)


# --------------------------------------------------------------------------------------------
# Mahalanobis scoring
# --------------------------------------------------------------------------------------------
def mahalanobis(embedding: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of every feature vector to its position's Gaussian (PaDiM scoring).

    ``out[b, 0, h, w] = sqrt(max(dᵀ · precision[p] · d, 0))`` with ``p = h * W + w`` and
    ``d = embedding[b, :, h, w] - mean[:, p]``, in one fused pass: no (P, B, C) temporaries, each
    precision matrix read once per batch (per 64 images on CUDA). ``precision`` must be
    symmetric (an inverse covariance): the kernels read only its upper triangle (on CUDA,
    float32 groups of up to 32 images stream its rows; the tiled kernel reads 64 x 64 tiles, and
    its groups of 32 or 64 images read the diagonal tiles whole), so it may also be given packed,
    as the upper triangles alone (:mod:`anomaly_kernels.packed_precision`). A NaN feature or
    form gives NaN (as ``clamp_min`` does), a negative form 0. An infinite feature gives +inf
    where every product it meets is positive. Where they differ in sign (``inf - inf``) or one
    meets an exact 0 of the precision (``0 * inf``), the result is NaN or +inf depending on the
    order of the sums, which differs between the reference (the full matrix), the CPU kernel
    (column sums of the upper triangle) and the CUDA kernels (which also split a column's sums
    between warps): such images are ill-defined on every device.

    Args:
        embedding: (B, C, H, W) float32 or float64.
        mean: (C, H*W), same dtype and device.
        precision: (H*W, C, C) symmetric, or packed (H*W, C*(C+1)/2); same dtype and device.

    Returns:
        (B, 1, H, W) distances in the embedding's dtype.
    """
    _check_floating("embedding", embedding)
    if embedding.dim() != 4:
        raise ValueError(f"embedding must be 4-D (B, C, H, W), got shape {tuple(embedding.shape)}")
    b, c, h, w = embedding.shape
    _check_floating("mean", mean, (embedding.dtype,))
    _check_floating("precision", precision, (embedding.dtype,))
    if mean.shape != (c, h * w):
        raise ValueError(f"mean must have shape ({c}, {h * w}) (C, H*W), got {tuple(mean.shape)}")
    if precision.shape not in ((h * w, c, c), (h * w, packed_length(c))):
        raise ValueError(
            f"precision must have shape ({h * w}, {c}, {c}) (H*W, C, C) or, packed, ({h * w}, {packed_length(c)}) "
            f"(H*W, C*(C+1)/2), got {tuple(precision.shape)}"
        )
    _check_same_device("mean", mean, "embedding", embedding)
    _check_same_device("precision", precision, "embedding", embedding)
    if not embedding.is_cuda or torch.compiler.is_compiling():
        # Traced calls record the operator itself (its fake kernel gives the shape).
        return _ops.mahalanobis.default(embedding, mean, precision)
    if precision.dim() == 3 and cublas_scores_faster(b, c, embedding.dtype):
        return _mahalanobis_batched_matmul(embedding, mean, precision)
    try:
        return _ops.mahalanobis.default(embedding, mean, precision)
    except RuntimeError as error:  # raised before any work is queued
        if "exceed what the CUDA kernel holds" not in str(error):
            raise
        return _mahalanobis_batched_matmul(embedding, mean, precision)


def cublas_scores_faster(images: int, channels: int, dtype: torch.dtype) -> bool:
    """Whether cuBLAS batched matmul scores (B, C) float32 faster than the native CUDA kernel.

    Measured on an H200 (``bench/results/NVIDIA-H200-2026-11-27-extra.md``, confirmed on the
    current kernel by ``NVIDIA-H200-2026-11-27-gpu-check.json``): the native kernel wins while
    the batch fits one image group with few channels and, at C = 550, up to 8 images (8 x 550 x
    64 x 64: 2.0 ms against 2.5 ms); beyond that the product is arithmetic-bound and cuBLAS's
    register-blocked GEMM wins (32 x 550 x 64 x 64: 3.75 ms against 4.7 ms). At C = 100 the
    native kernel still wins at 32 images (0.25 ms against 0.32 ms). Those figures are the tiled
    kernel's; groups of up to 32 images have since moved to a kernel that streams the matrices'
    rows (``ANOMALY_KERNELS_MAHALANOBIS_STREAM``), not yet measured on a GPU, so the bounds stay
    until it is. ``anomaly-kernels bench-gpu`` times both (``native_kernel`` beside ``native``,
    and ``native_kernel_tiled``) so the bounds can follow the kernel.

    The route is taken only where it is as exact as the kernel: float32 with full-precision
    matmuls (``torch.get_float32_matmul_precision() == "highest"``, i.e. TF32 off; the product
    runs with autocast disabled). float64 and packed precisions (which the route would first
    have to unpack: 2.5 times the memory traffic) always take the native kernel.
    """
    if dtype != torch.float32 or not _float32_matmuls_are_exact():
        return False
    return (channels >= 160 and images > 16) or (channels >= 512 and images > 8)


def _float32_matmuls_are_exact() -> bool:
    """Whether float32 CUDA matmuls run in full precision (no TF32), set by either of torch's APIs."""
    try:
        return torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # the per-backend fp32_precision settings are in use, which this getter refuses
        return getattr(torch.backends.cuda.matmul, "fp32_precision", None) == "ieee"


# Positions scored per batched product: bounds the (positions, B, C) temporaries to ~256 MB.
_MATMUL_SCORE_ELEMENTS = 1 << 26


def _mahalanobis_batched_matmul(embedding: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """The same distances as ``(d @ precision * d).sum(-1)``, in chunks of positions (CUDA route,
    and the fallback for more channels than the CUDA kernel holds).

    Autocast is off (the inputs are float32 or float64 and stay so). Packed precisions are
    unpacked one chunk at a time (the full (chunk, C, C) temporary only).
    """
    with torch.autocast(device_type=embedding.device.type, enabled=False):
        return _batched_matmul_forms(embedding, mean, precision)


def _batched_matmul_forms(embedding: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    b, c, h, w = embedding.shape
    p = h * w
    out = embedding.new_empty((p, b))
    rows = embedding.reshape(b, c, p)
    per_position = b * c + (c * c if precision.dim() == 2 else 0)  # unpacked matrices are temporaries too
    most = max(1, _MATMUL_SCORE_ELEMENTS // max(1, per_position))
    chunks = -(-p // most)
    chunk = max(1, -(-p // max(1, chunks)))  # equal chunks: no small last batched product
    for first in range(0, p, chunk):
        last = min(p, first + chunk)
        centred = rows[:, :, first:last].permute(2, 0, 1) - mean[:, first:last].T[:, None, :]  # (p', B, C)
        matrices = precision[first:last]
        if matrices.dim() == 2:
            matrices = unpack_upper_triangle(matrices)
        forms = (torch.bmm(centred, matrices) * centred).sum(-1)
        torch.sqrt(forms.clamp_(min=0), out=out[first:last])  # clamp and sqrt keep NaN, as the kernels do
    return out.T.reshape(b, 1, h, w)


@torch.library.register_fake("anomaly_kernels::mahalanobis")
def _mahalanobis_fake(embedding, mean, precision):
    b, _, h, w = embedding.shape
    return embedding.new_empty((b, 1, h, w))


# --------------------------------------------------------------------------------------------
# banded separable resampling (fused upsample + blur)
# --------------------------------------------------------------------------------------------
def _check_band(name: str, start: torch.Tensor, weights: torch.Tensor, size: int, input: torch.Tensor) -> None:
    if not isinstance(start, torch.Tensor) or start.dtype != torch.int64 or start.dim() != 1:
        raise ValueError(f"start_{name} must be a 1-D int64 tensor, got {getattr(start, 'shape', start)}")
    _check_floating(f"weights_{name}", weights, (input.dtype,))
    if weights.dim() != 2 or weights.shape[0] != start.shape[0] or weights.shape[1] < 1:
        raise ValueError(f"weights_{name} must have shape ({start.shape[0]}, L) with L >= 1, got {tuple(weights.shape)}")
    _check_same_device(f"start_{name}", start, "input", input)
    _check_same_device(f"weights_{name}", weights, "input", input)
    if start.numel() and (int(start.min()) < 0 or int(start.max()) + weights.shape[1] > size):
        raise ValueError(f"start_{name} with {weights.shape[1]} taps must stay inside the input's {size} samples")


def banded_resample2d(
    input: torch.Tensor, start_y: torch.Tensor, weights_y: torch.Tensor, start_x: torch.Tensor, weights_x: torch.Tensor
) -> torch.Tensor:
    """Separable linear resampling with a short band of input samples per output sample.

    ``out[b, c, y, x] = Σ_a Σ_t weights_y[y, a] · weights_x[x, t] · input[b, c, start_y[y] + a,
    start_x[x] + t]``. Upsampling followed by a blur is such a map on each axis, so
    :func:`anomaly_kernels.components.filters.upsample_blur2d` folds both into one pass without
    the full-size intermediate image.

    Args:
        input: (B, C, h, w) float32 or float64.
        start_y: (H,) int64 first input row of each output row; ``start_y + L_y <= h``.
        weights_y: (H, L_y) same dtype as ``input``.
        start_x: (W,) int64 first input column of each output column.
        weights_x: (W, L_x).

    Returns:
        (B, C, H, W).

    The starts are checked against the input's size; for CUDA bands that reads them back (a
    host synchronisation per axis). A caller applying one band many times can check it once and
    call ``torch.ops.anomaly_kernels.banded_resample2d`` directly, as ``upsample_blur2d`` does
    (the CUDA kernel clamps every start into the input, so an unchecked band never reads
    outside it).
    """
    _check_floating("input", input)
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (B, C, h, w), got shape {tuple(input.shape)}")
    _check_band("y", start_y, weights_y, input.shape[2], input)
    _check_band("x", start_x, weights_x, input.shape[3], input)
    return _ops.banded_resample2d.default(input, start_y, weights_y, start_x, weights_x)


@torch.library.register_fake("anomaly_kernels::banded_resample2d")
def _banded_resample2d_fake(input, start_y, weights_y, start_x, weights_x):
    return input.new_empty((input.shape[0], input.shape[1], start_y.shape[0], start_x.shape[0]))


# --------------------------------------------------------------------------------------------
# separable blur
# --------------------------------------------------------------------------------------------
def blur_output_size(size: int, taps: int, padding: str) -> int:
    """Length of one blurred axis: unchanged for ``"same"``, ``size - taps + 1`` for ``"valid"``."""
    return size if padding == "same" else size - taps + 1


def separable_blur2d(
    input: torch.Tensor,
    kernel_y: torch.Tensor,
    kernel_x: torch.Tensor,
    border_type: str = "reflect",
    padding: str = "same",
) -> torch.Tensor:
    """Depthwise 2-D correlation with the separable kernel ``outer(kernel_y, kernel_x)``.

    Equals ``F.conv2d(F.pad(input, pads, mode=border_type), outer(kernel_y, kernel_x)
    .expand(C, 1, Ky, Kx), groups=C)`` with ``(k - 1) // 2`` samples padded before and the rest
    after each axis, at ``Ky + Kx`` instead of ``Ky * Kx`` multiply-adds per output sample.
    Unlike ``F.pad``, "reflect" and "circular" accept padding wider than the input (they keep
    mirroring / wrapping).

    Args:
        input: (B, C, H, W) float32 or float64.
        kernel_y: (Ky,) taps along H, same dtype and device as ``input``.
        kernel_x: (Kx,) taps along W.
        border_type: "constant" (zeros), "reflect", "replicate" or "circular".
        padding: "same" (output (B, C, H, W)) or "valid" (output (B, C, H-Ky+1, W-Kx+1)).

    Returns:
        The blurred tensor, a new tensor (``input`` is never modified). Differentiable with
        respect to ``input`` (the kernels are treated as constants).
    """
    _check_floating("input", input)
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (B, C, H, W), got shape {tuple(input.shape)}")
    for name, kernel in (("kernel_y", kernel_y), ("kernel_x", kernel_x)):
        _check_floating(name, kernel, (input.dtype,))
        if kernel.dim() != 1 or kernel.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(kernel.shape)}")
        _check_same_device(name, kernel, "input", input)
    if border_type not in BORDER_TYPES:
        raise ValueError(f"border_type must be one of {BORDER_TYPES}, got {border_type!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    check_blur_fits(input, kernel_y, kernel_x, padding)
    return checked_separable_blur2d(input, kernel_y, kernel_x, border_type, padding == "same")


def check_blur_fits(input: torch.Tensor, kernel_y: torch.Tensor, kernel_x: torch.Tensor, padding: str) -> None:
    """Raise ValueError unless a "valid" blur of ``input`` (B, C, H, W) leaves at least one sample."""
    if padding == "valid" and (input.shape[2] < kernel_y.numel() or input.shape[3] < kernel_x.numel()):
        raise ValueError(
            f"'valid' padding needs H >= {kernel_y.numel()} and W >= {kernel_x.numel()}, "
            f"got input shape {tuple(input.shape)}"
        )


def checked_separable_blur2d(
    input: torch.Tensor, kernel_y: torch.Tensor, kernel_x: torch.Tensor, border_type: str, same_padding: bool
) -> torch.Tensor:
    """:func:`separable_blur2d` on arguments its caller has already checked (GaussianBlur2d
    checks the input and owns valid kernels): the per-image path of a model pays for one set of
    checks, not two. The operator's own checks still run."""
    if not torch.compiler.is_compiling() and not (
        torch.is_grad_enabled() and (input.requires_grad or kernel_y.requires_grad or kernel_x.requires_grad)
    ):
        # Nothing for autograd to record: go straight to the device kernel, past the autograd
        # layer that register_autograd adds in Python (about 5 us a call, longer than a GPU
        # blur of a few maps takes). Traced calls keep the plain path.
        with torch._C._AutoDispatchBelowAutograd():
            return _ops.separable_blur2d.default(input, kernel_y, kernel_x, border_type, same_padding)
    return _ops.separable_blur2d.default(input, kernel_y, kernel_x, border_type, same_padding)


@torch.library.register_fake("anomaly_kernels::separable_blur2d")
def _separable_blur2d_fake(input, kernel_y, kernel_x, border_type, same_padding):
    padding = "same" if same_padding else "valid"
    b, c, h, w = input.shape
    return input.new_empty(
        (b, c, blur_output_size(h, kernel_y.shape[0], padding), blur_output_size(w, kernel_x.shape[0], padding))
    )


def border_index(length: int, size: int, before: int, border_type: str, device) -> torch.Tensor:
    """Input index each of ``length`` padded positions reads (-1 for constant padding)."""
    i = torch.arange(length, device=device) - before
    inside = (i >= 0) & (i < size)
    if border_type == "constant":
        return torch.where(inside, i, torch.full_like(i, -1))
    if border_type == "replicate":
        return i.clamp(0, size - 1)
    if border_type == "circular":
        return i.remainder(size)
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    r = i.remainder(period)
    return torch.where(r < size, r, period - r)


def _fold_padding(grad_padded: torch.Tensor, dim: int, size: int, before: int, border_type: str) -> torch.Tensor:
    """Adjoint of padding along ``dim``: every padded sample's gradient goes to the input sample it copied."""
    index = border_index(grad_padded.shape[dim], size, before, border_type, grad_padded.device)
    keep = index >= 0
    shape = list(grad_padded.shape)
    shape[dim] = size
    out = grad_padded.new_zeros(shape)
    return out.index_add_(dim, index[keep], grad_padded.index_select(dim, torch.nonzero(keep).flatten()))


def _separable_blur2d_backward(ctx, grad):
    # The blur is a correlation of the padded input; its adjoint is the full correlation with the
    # flipped kernels (a zero-padded "valid" blur), followed by the adjoint of the padding.
    kernel_y, kernel_x = ctx.saved_tensors
    ky, kx = kernel_y.shape[0], kernel_x.shape[0]
    full = torch.nn.functional.pad(grad, (kx - 1, kx - 1, ky - 1, ky - 1))
    grad_padded = _ops.separable_blur2d.default(full, kernel_y.flip(0), kernel_x.flip(0), "constant", False)
    if ctx.same_padding:
        h, w = ctx.input_size
        grad_padded = _fold_padding(grad_padded, 2, h, (ky - 1) // 2, ctx.border_type)
        grad_padded = _fold_padding(grad_padded, 3, w, (kx - 1) // 2, ctx.border_type)
    return grad_padded, None, None, None, None


def _separable_blur2d_setup(ctx, inputs, output):
    input, kernel_y, kernel_x, border_type, same_padding = inputs
    ctx.save_for_backward(kernel_y, kernel_x)
    ctx.border_type, ctx.same_padding, ctx.input_size = border_type, same_padding, tuple(input.shape[2:])


torch.library.register_autograd(
    "anomaly_kernels::separable_blur2d", _separable_blur2d_backward, setup_context=_separable_blur2d_setup
)
