"""PaDiM's per-position Gaussians fitted from embeddings sharded over the ranks of a process group.

Averaging per-rank covariances would be wrong (each is centred on its own rank's mean and
weighted by its own count); the ranks instead reduce summed moments, which add up exactly:

1. one all-gather of every rank's count and embedding shape (the shapes must agree);
2. one all-reduce (SUM) of the count of non-finite values and of Σx (C, P) in float64, from
   which every rank gets the global mean μ = Σx / n;
3. per chunk of positions, one all-reduce (SUM) of the second moments about μ,
   Σ (x − μ)(x − μ)ᵀ (Pc, C, C) in float64, each rank's from one batched product over its
   own embeddings; then ``cov = S / (n − 1) + ridge · I`` and its inverse through a batched
   Cholesky factorisation and ``cholesky_inverse`` in float64, the same on every rank.

Why the second moments are taken about the global mean (two all-reduces instead of one): the
one-pass form ``(Σ x xᵀ − n μ μᵀ) / (n − 1)`` subtracts two large, nearly equal sums, which
in float64 loses about ``log10(|μ|² / σ²)`` digits of the covariance (features whose mean is
far larger than their spread), whereas moments about μ are those of the two-pass formula that
:func:`anomaly_kernels.ops.gaussian_fit` uses. Shifting the moments is exact algebra (``n μ μᵀ``
becomes ``n (μ − μ)(μ − μ)ᵀ = 0``); it costs one extra all-reduce of C·P values.

Memory: the float64 temporaries of one chunk are bounded (``max_chunk_entries``); the
embedding itself is never copied whole to float64.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist

from anomaly_kernels._validation import all_finite
from anomaly_kernels.packed_precision import pack_upper_triangle, packed_length

# float64 entries of the temporaries of one chunk of positions (2^25 entries = 256 MB).
_DEFAULT_CHUNK_ENTRIES = 1 << 25


def distributed_gaussian_fit(
    local_embedding: torch.Tensor,
    ridge: float = 0.01,
    process_group: Optional[dist.ProcessGroup] = None,
    max_chunk_entries: int = _DEFAULT_CHUNK_ENTRIES,
    packed: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse covariance at every position of embeddings spread over the ranks.

    Call it on every rank with that rank's embeddings; every rank gets the same result, equal
    (up to float64 summation order) to :func:`anomaly_kernels.ops.gaussian_fit` on all ranks'
    embeddings concatenated.

    Args:
        local_embedding: (n_r, C, H, W) float32 or float64 embeddings of this rank; n_r may be
            0. On the CPU for gloo, on this rank's GPU for NCCL.
        ridge: added to every covariance's diagonal, >= 0 (PaDiM: 0.01).
        process_group: the group to work in (default: the default group).
        max_chunk_entries: bound on the float64 entries of one chunk's temporaries.
        packed: return each precision's upper triangle, (H·W, C·(C+1)/2), written chunk by
            chunk (no full (H·W, C, C) tensor; :mod:`anomaly_kernels.packed_precision`).

    Returns:
        ``(mean (C, H·W), precision (H·W, C, C) or packed (H·W, C·(C+1)/2))`` in the
        embedding's dtype, on its device.

    Raises:
        TypeError: not a floating tensor.
        ValueError: not 4-D, ranks disagree on (C, H, W), fewer than 2 embeddings in all,
            non-finite values on any rank, or a covariance that is not positive definite
            (raised on every rank alike, so no rank is left waiting).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")
    group = process_group if process_group is not None else dist.group.WORLD
    if not isinstance(local_embedding, torch.Tensor) or not local_embedding.is_floating_point():
        raise TypeError(
            f"local_embedding must be a floating (n, C, H, W) tensor, got "
            f"{getattr(local_embedding, 'dtype', type(local_embedding).__name__)}"
        )
    if local_embedding.dim() != 4:
        raise ValueError(f"local_embedding must be 4-D (n, C, H, W), got shape {tuple(local_embedding.shape)}")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if max_chunk_entries < 1:
        raise ValueError(f"max_chunk_entries must be >= 1, got {max_chunk_entries}")

    device = local_embedding.device
    local_count, channels, height, width = local_embedding.shape
    positions = height * width
    counts = _agree_on_shape(local_embedding, group)
    total = int(counts.sum())
    if total < 2:
        raise ValueError(f"at least 2 embeddings in all are needed to estimate covariances, got {total}")

    samples = local_embedding.reshape(local_count, channels, positions)
    # [non-finite flag, Σx (C·P)]: one reduction for the validity check and the first moment.
    first = torch.zeros(1 + channels * positions, dtype=torch.float64, device=device)
    first[0] = 0.0 if all_finite(local_embedding) else 1.0
    if local_count:
        first[1:] = samples.sum(dim=0, dtype=torch.float64).flatten()
    dist.all_reduce(first, op=dist.ReduceOp.SUM, group=group)
    if float(first[0]) > 0:
        raise ValueError(f"the embeddings of {int(first[0])} rank(s) contain NaN or infinite values")
    mean = first[1:].reshape(channels, positions) / total

    out_dtype = local_embedding.dtype if local_embedding.dtype in (torch.float32, torch.float64) else torch.float32
    precision_shape = (positions, packed_length(channels)) if packed else (positions, channels, channels)
    precision = torch.empty(precision_shape, dtype=out_dtype, device=device)
    # Same chunk boundaries on every rank: they depend only on gathered quantities.
    per_position = 4 * channels * channels + channels * int(counts.max())
    chunk = max(1, max_chunk_entries // per_position)
    eye = torch.eye(channels, dtype=torch.float64, device=device)
    for begin in range(0, positions, chunk):
        end = min(begin + chunk, positions)
        # (Pc, C, n_r): positions lead, so the second moments are one batched product.
        centred = (samples[:, :, begin:end].to(torch.float64) - mean[:, begin:end]).permute(2, 1, 0)
        second = torch.bmm(centred, centred.transpose(1, 2))
        del centred
        dist.all_reduce(second, op=dist.ReduceOp.SUM, group=group)
        covariance = second.div_(total - 1).add_(eye, alpha=ridge)
        factor, info = torch.linalg.cholesky_ex(covariance)
        if bool((info != 0).any()):
            position = begin + int(torch.nonzero(info)[0])
            raise ValueError(
                f"the covariance at position {position} is not positive definite; check the embedding's scale"
            )
        inverse = torch.cholesky_inverse(factor).to(out_dtype)
        precision[begin:end] = pack_upper_triangle(inverse) if packed else inverse
    return mean.to(out_dtype), precision


def _agree_on_shape(local_embedding: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Every rank's embedding count (world,) on the CPU; a ValueError on every rank if (C, H, W) differ."""
    world = dist.get_world_size(group)
    layout = torch.tensor(list(local_embedding.shape), dtype=torch.int64, device=local_embedding.device)
    gathered = [torch.empty_like(layout) for _ in range(world)]
    dist.all_gather(gathered, layout, group=group)
    table = torch.stack(gathered).cpu()
    if bool((table[:, 1:] != table[0, 1:]).any()):
        raise ValueError(
            f"every rank's embedding must have the same (C, H, W), got {[tuple(row[1:].tolist()) for row in table]}"
        )
    return table[:, 0]
