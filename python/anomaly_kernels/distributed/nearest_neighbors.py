"""k-nearest-neighbour search in a memory bank whose rows are sharded over the ranks of a group.

Each rank searches its own shard (exactly, in bounded-memory chunks), then the ranks exchange
their (queries, k) candidates with one all-gather and every rank keeps the k best of the
world * k candidates, ordered by distance and then by global row index, which is the result of
searching the whole bank in one process.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist

from anomaly_kernels.components.search import nearest_neighbors
from anomaly_kernels.distributed.coreset import shard_layout


def merge_candidates(distances: torch.Tensor, indices: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of (Q, C) candidates by (distance, index): ties go to the smaller index."""
    order = torch.argsort(indices, dim=1, stable=True)  # index order first ...
    distances, indices = distances.gather(1, order), indices.gather(1, order)
    order = torch.argsort(distances, dim=1, stable=True)[:, :k]  # ... then a stable sort by distance
    return distances.gather(1, order), indices.gather(1, order)


def sharded_nearest_neighbors(
    queries: torch.Tensor,
    local_bank: torch.Tensor,
    k: int = 1,
    process_group: Optional[dist.ProcessGroup] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distances and global indices of the ``k`` bank rows nearest to every query.

    Args:
        queries: (Q, D) the same on every rank (e.g. the patches of a test batch).
        local_bank: (M_r, D) this rank's rows of the memory bank (rows numbered in rank order);
            M_r may be smaller than ``k`` or zero.
        k: neighbours per query, at most the total bank size.

    Returns:
        ``(distances (Q, k), indices (Q, k) int64)`` sorted by distance, identical on all ranks.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")
    group = process_group if process_group is not None else dist.group.WORLD
    sizes, _ = shard_layout(local_bank.shape[0], local_bank.shape[1], group, local_bank.device)
    total = int(sizes.sum())
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}] (the whole bank), got {k}")
    rank = dist.get_rank(group)
    offset = int(sizes[:rank].sum())
    q = queries.shape[0]
    # Shards with fewer than k rows pad with +inf candidates, which never win the merge.
    distances = torch.full((q, k), float("inf"), dtype=queries.dtype, device=queries.device)
    indices = torch.full((q, k), total, dtype=torch.int64, device=queries.device)
    local_k = min(k, local_bank.shape[0])
    if local_k:
        found_distances, found_indices = nearest_neighbors(queries, local_bank, k=local_k)
        distances[:, :local_k] = found_distances
        indices[:, :local_k] = found_indices + offset
    world = dist.get_world_size(group)
    all_distances = [torch.empty_like(distances) for _ in range(world)]
    all_indices = [torch.empty_like(indices) for _ in range(world)]
    dist.all_gather(all_distances, distances, group=group)
    dist.all_gather(all_indices, indices, group=group)
    return merge_candidates(torch.cat(all_distances, 1), torch.cat(all_indices, 1), k)
