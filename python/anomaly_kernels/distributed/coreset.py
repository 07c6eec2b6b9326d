"""Sharded k-center-greedy coreset selection over a torch.distributed process group.

Every rank holds a shard of the (projected) features and the running minimum distances of its
rows. Per iteration each rank runs the native fused step on its shard against the newest center,
then the ranks agree on the global farthest row with one all-reduce (MAX) of a packed 64-bit key:
the distance's float bits in the high half, the complemented global row index in the low half,
so the largest key is the farthest row with the smallest index, exactly as in one process. The
owner of that row broadcasts it; it becomes the next center.

The size, seeded projection and start row, and the replacement of repeated picks follow
:mod:`anomaly_kernels.components.sampling.coreset_rules`, as the one-process
:class:`~anomaly_kernels.components.sampling.KCenterGreedy` does.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from anomaly_kernels import ops
from anomaly_kernels._validation import all_finite
from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.components.sampling import coreset_rules

_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1


def _pack(distance: torch.Tensor, global_index: torch.Tensor) -> torch.Tensor:
    """(distance >= 0 float32, index < 2^32) -> int64 key ordered by distance, then smaller index."""
    bits = distance.reshape(1).view(torch.int32).to(torch.int64) & _INDEX_MASK
    return (bits << _INDEX_BITS) | (_INDEX_MASK - global_index.reshape(1))


def _unpack_index(key: torch.Tensor) -> int:
    return _INDEX_MASK - (int(key.item()) & _INDEX_MASK)


def shard_layout(rows: int, dims: int, group, device: Optional[torch.device] = None) -> tuple[torch.Tensor, int]:
    """All ranks' row counts (world,) on the CPU and the common feature dimension; checks they agree.

    ``device`` is where the exchange runs: the shards' device, so that NCCL groups (GPU tensors
    only) work as well as gloo (default: the CPU).
    """
    world = dist.get_world_size(group)
    local = torch.tensor([rows, dims], dtype=torch.int64, device=device)
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local, group=group)
    table = torch.stack(gathered).cpu()
    if not bool((table[:, 1] == dims).all()):
        raise ValueError(f"every rank must hold features with the same number of columns, got {table[:, 1].tolist()}")
    return table[:, 0], dims


def sharded_k_center_greedy(
    local_features: torch.Tensor,
    coreset_size: int,
    start_index: int,
    process_group: Optional[dist.ProcessGroup] = None,
    progress: Optional[bool] = None,
    timings: Optional[Dict[str, float]] = None,
) -> List[int]:
    """Greedy k-center selection over row shards held by the ranks of a process group.

    Rows are numbered globally in rank order (rank 0's rows first). Call it on every rank with
    that rank's shard; every rank gets the same list.

    Args:
        local_features: (n_r, D) float32 shard of this rank (n_r may be 0); on the CPU for gloo,
            on this rank's GPU for NCCL.
        coreset_size: number of rows to select, 1 <= coreset_size <= N (all rows).
        start_index: global index of the first center (the same on every rank); it is the first
            returned index.
        process_group: the group to work in (default: the default group).
        progress: show a progress bar on rank 0 (None: only on a terminal).
        timings: if given, receives the seconds this rank spent in the local "step" and in
            "communication" (broadcast + all-reduce, including waiting for other ranks).

    Returns:
        ``coreset_size`` distinct global row indices in selection order, identical to a single
        process running the same selection on all rows concatenated (repeated picks, made only
        once every row is at distance 0, are replaced as
        :func:`~anomaly_kernels.components.sampling.coreset_rules.distinct_picks` says).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")
    group = process_group if process_group is not None else dist.group.WORLD
    if not isinstance(local_features, torch.Tensor) or local_features.dim() != 2:
        raise ValueError(f"local_features must be a 2-D (n, D) tensor, got {getattr(local_features, 'shape', local_features)}")
    if local_features.dtype != torch.float32:
        raise TypeError(f"local_features must be float32, got {local_features.dtype}")
    rank = dist.get_rank(group)
    sizes, dims = shard_layout(local_features.shape[0], local_features.shape[1], group, local_features.device)
    total = int(sizes.sum())
    if total >= 1 << _INDEX_BITS:
        raise ValueError(f"at most 2^32 - 1 rows in all, got {total}")
    if not 1 <= coreset_size <= total:
        raise ValueError(f"coreset_size must be in [1, {total}] (all rows), got {coreset_size}")
    if not 0 <= start_index < total:
        raise ValueError(f"start_index must be a global row index in [0, {total}), got {start_index}")
    if not all_finite(local_features):
        raise ValueError(f"local_features of rank {rank} contain NaN or infinite values")

    offsets = torch.cumsum(sizes, 0) - sizes
    offset, rows = int(offsets[rank]), int(sizes[rank])
    device = local_features.device
    features = local_features.contiguous()
    min_distances = torch.full((rows,), float("inf"), device=device)
    center_row = torch.empty(dims, device=device)
    key = torch.empty(1, dtype=torch.int64, device=device)

    chosen = [start_index]
    with tqdm(total=coreset_size, desc="k-center greedy (sharded)", unit="pt", leave=False,
              disable=(rank != 0) or (None if progress is None else not progress)) as bar:
        bar.update(1)
        while len(chosen) < coreset_size:
            center = chosen[-1]
            owner = int(torch.searchsorted(offsets, torch.tensor(center), right=True)) - 1
            if owner == rank:
                center_row.copy_(features[center - offset])
            t0 = time.perf_counter()
            dist.broadcast(center_row, src=dist.get_global_rank(group, owner), group=group)
            t1 = time.perf_counter()
            if rows:
                local_index = ops.kcenter_step_to_(features, min_distances, center_row)
                key.copy_(_pack(min_distances[local_index], local_index + offset))
            else:
                key.zero_()
            t2 = time.perf_counter()
            dist.all_reduce(key, op=dist.ReduceOp.MAX, group=group)
            chosen.append(_unpack_index(key))
            if timings is not None:
                timings["step"] = timings.get("step", 0.0) + (t2 - t1)
                timings["communication"] = timings.get("communication", 0.0) + (t1 - t0) + (time.perf_counter() - t2)
            bar.update(1)
    return coreset_rules.distinct_picks(chosen, total)


def _check_embedding(embedding: torch.Tensor, name: str) -> None:
    if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2 or not embedding.is_floating_point():
        raise ValueError(
            f"{name} must be a floating (n, D) tensor, got {getattr(embedding, 'shape', type(embedding).__name__)}"
        )


def distributed_coreset(
    local_embedding: torch.Tensor,
    sampling_ratio: float,
    seed: int = 0,
    process_group: Optional[dist.ProcessGroup] = None,
    progress: Optional[bool] = None,
) -> List[int]:
    """PatchCore's coreset of a memory bank sharded over ranks: projection + sharded selection.

    Every rank builds the same SparseRandomProjection (:func:`~anomaly_kernels.components.sampling.
    coreset_rules.coreset_projection`: eps 0.9, ``random_state=seed``, sized by the global row
    count) and projects its own rows, then :func:`sharded_k_center_greedy` runs from the start row
    drawn from ``torch.Generator().manual_seed(seed)``. The selection equals
    ``KCenterGreedy(embedding, sampling_ratio, seed=seed).select_coreset_idxs()`` (one process)
    on the concatenated bank.

    Args:
        local_embedding: (n_r, D) rows of this rank (n_r may be 0).
        sampling_ratio: fraction of all rows to keep, in (0, 1].
        seed: shared seed of the projection and the start row, an int in [0, 2**63).

    Returns:
        ``int(N * sampling_ratio)`` distinct global row indices (rank order numbering).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")
    _check_embedding(local_embedding, "local_embedding")
    seed = coreset_rules.check_seed(seed)
    group = process_group if process_group is not None else dist.group.WORLD
    sizes, dims = shard_layout(local_embedding.shape[0], local_embedding.shape[1], group, local_embedding.device)
    total = int(sizes.sum())
    size = coreset_rules.coreset_size(total, sampling_ratio)
    projection = coreset_rules.coreset_projection(total, dims, seed)
    features = local_embedding if projection is None else projection.transform(local_embedding)
    start = coreset_rules.seeded_start(total, seed)
    return sharded_k_center_greedy(features.to(torch.float32), size, start, group, progress)


def seeded_coreset(
    embedding: torch.Tensor, sampling_ratio: float, seed: int, progress: Optional[bool] = None
) -> List[int]:
    """The coreset :func:`distributed_coreset` selects, computed by one process holding all rows.

    The same as ``KCenterGreedy(embedding, sampling_ratio, seed=seed).select_coreset_idxs()``,
    which is where the one-process selection lives; kept here beside its multi-process twin.

    Args:
        embedding: (N, D) floating rows.
        sampling_ratio: fraction of rows to keep, in (0, 1]; ``int(N * ratio)`` must be >= 1.
        seed: seed of the projection and the start row, an int in [0, 2**63).
        progress: show a progress bar (``None``: only on a terminal).

    Returns:
        ``int(N * sampling_ratio)`` distinct row indices in selection order.
    """
    _check_embedding(embedding, "embedding")
    sampler = KCenterGreedy(embedding, sampling_ratio, progress=progress, seed=coreset_rules.check_seed(seed))
    return sampler.select_coreset_idxs()
