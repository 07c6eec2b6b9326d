"""Variable-sized row blocks of the ranks of a process group, assembled on every rank.

``torch.distributed.all_gather`` moves blocks of one shape; ranks hold different numbers of
rows (their shards of a data set), so every block is padded to the largest one, gathered, and
trimmed again. Rows are numbered globally in rank order (rank 0's rows first), as in
:mod:`anomaly_kernels.distributed.coreset`.

- :func:`all_gather_rows`: every rank's rows (n_r, *S), concatenated to (N, *S) on every rank.
- :func:`gather_selected_rows`: only the rows at given global indices, fetched from the ranks
  that own them, in the order of the indices: the memory bank of a sharded coreset.

Tensors travel on the rows' device: the CPU for gloo, this rank's GPU for NCCL.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

# Largest number of trailing dimensions a row may have (rows of PaDiM embeddings are (C, h, w)).
_MAX_ROW_DIMS = 6
# Row dtypes that can travel, numbered for the layout exchange.
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8)


def _require_process_group(process_group: Optional[dist.ProcessGroup]) -> dist.ProcessGroup:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")
    return process_group if process_group is not None else dist.group.WORLD


def _exchange_layouts(
    local_rows: Optional[torch.Tensor], device: torch.device, group: dist.ProcessGroup
) -> Tuple[List[int], Tuple[int, ...], Optional[torch.dtype]]:
    """Every rank's row count, the common row shape and dtype code; a ValueError if shapes differ.

    A rank without rows (``None``) takes the row shape of the ranks that have some.
    """
    world = dist.get_world_size(group)
    # [has rows, n, ndim of a row, dtype code, row dims padded with -1]
    layout = torch.full((4 + _MAX_ROW_DIMS,), -1, dtype=torch.int64)
    layout[0] = 0
    if local_rows is not None:
        if local_rows.dim() - 1 > _MAX_ROW_DIMS:
            raise ValueError(
                f"rows may have at most {_MAX_ROW_DIMS} dimensions after the first, got shape {tuple(local_rows.shape)}"
            )
        layout[0], layout[1], layout[2] = 1, local_rows.shape[0], local_rows.dim() - 1
        layout[3] = _DTYPES.index(local_rows.dtype) if local_rows.dtype in _DTYPES else -2
        layout[4 : 4 + local_rows.dim() - 1] = torch.tensor(local_rows.shape[1:], dtype=torch.int64)
    layout = layout.to(device)
    gathered = [torch.empty_like(layout) for _ in range(world)]
    dist.all_gather(gathered, layout, group=group)
    table = torch.stack(gathered).cpu()
    present = table[table[:, 0] == 1]
    if present.shape[0] == 0:
        raise ValueError("no rank holds any rows to gather")
    if bool((present[:, 2:] != present[0, 2:]).any()):
        shapes = [tuple(int(d) for d in row[4 : 4 + int(row[2])]) for row in present]
        dtypes = [int(row[3]) for row in present]
        raise ValueError(
            f"every rank must hold rows of one shape and dtype, got row shapes {shapes} (dtype codes {dtypes})"
        )
    if int(present[0, 3]) < 0:
        raise TypeError(f"rows must have one of the dtypes {[str(d) for d in _DTYPES]}")
    counts = [int(row[1]) if int(row[0]) == 1 else 0 for row in table]
    row_shape = tuple(int(d) for d in present[0, 4 : 4 + int(present[0, 2])])
    return counts, row_shape, _DTYPES[int(present[0, 3])]


def _gather_padded(block: torch.Tensor, counts: Sequence[int], group: dist.ProcessGroup) -> List[torch.Tensor]:
    """Each rank's ``block`` (counts[r], *S), padded to the largest count for the exchange and trimmed."""
    largest = max(counts)
    padded = block.new_zeros((largest, *block.shape[1:]))
    padded[: block.shape[0]] = block
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded.contiguous(), group=group)
    return [piece[:count] for piece, count in zip(gathered, counts)]


def all_gather_rows(
    local_rows: Optional[torch.Tensor],
    process_group: Optional[dist.ProcessGroup] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """All ranks' rows, concatenated in rank order, on every rank.

    Args:
        local_rows: (n_r, *S) rows of this rank, or ``None`` when it has none (then ``device``
            names where the exchange runs; the row shape comes from the other ranks).
        process_group: the group (default: the default group).
        device: device of the exchange when ``local_rows`` is ``None`` (default: the CPU).

    Returns:
        (N, *S) with N = Σ n_r, rank 0's rows first; the caller's tensor is not modified.

    Raises:
        ValueError: ranks hold rows of different shapes or dtypes, or no rank holds rows.
    """
    group = _require_process_group(process_group)
    device = local_rows.device if local_rows is not None else torch.device(device or "cpu")
    counts, row_shape, dtype = _exchange_layouts(local_rows, device, group)
    block = local_rows if local_rows is not None else torch.empty((0, *row_shape), dtype=dtype, device=device)
    return torch.cat(_gather_padded(block, counts, group), dim=0)


def gather_selected_rows(
    local_rows: torch.Tensor,
    global_indices: Sequence[int],
    process_group: Optional[dist.ProcessGroup] = None,
) -> torch.Tensor:
    """The rows at ``global_indices`` of the rank-ordered concatenation of all shards, on every rank.

    Only the selected rows travel: each rank sends those it owns (padded to the largest such
    count), so the exchange moves ``world × max_r(selected rows of rank r)`` rows, not the shards.

    Args:
        local_rows: (n_r, D) this rank's shard (n_r may be 0); every rank's D and dtype agree.
        global_indices: the same list of global row indices on every rank (e.g. the result of
            :func:`~anomaly_kernels.distributed.distributed_coreset`).
        process_group: the group (default: the default group).

    Returns:
        (len(global_indices), D): row ``i`` is global row ``global_indices[i]``.

    Raises:
        ValueError: ``local_rows`` is not 2-D, ranks disagree on D, or an index is out of range.
    """
    group = _require_process_group(process_group)
    if not isinstance(local_rows, torch.Tensor) or local_rows.dim() != 2:
        shape = getattr(local_rows, "shape", type(local_rows).__name__)
        raise ValueError(f"local_rows must be a 2-D (n, D) tensor, got {shape}")
    counts, _, _ = _exchange_layouts(local_rows, local_rows.device, group)
    sizes = torch.tensor(counts, dtype=torch.int64)
    total = int(sizes.sum())
    indices = torch.as_tensor(list(global_indices), dtype=torch.int64)
    if indices.dim() != 1 or (indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= total)):
        raise ValueError(f"global_indices must be row indices in [0, {total}), got {list(global_indices)[:10]}...")
    offsets = torch.cumsum(sizes, 0) - sizes
    # right=True: an index equal to the offset of an empty shard belongs to the next non-empty one.
    owners = torch.searchsorted(offsets, indices, right=True) - 1
    rank = dist.get_rank(group)
    mine = (indices[owners == rank] - offsets[rank]).to(local_rows.device)
    selected_counts = torch.bincount(owners, minlength=len(counts)).tolist()
    blocks = _gather_padded(local_rows.index_select(0, mine), selected_counts, group)
    rows = local_rows.new_empty((indices.numel(), local_rows.shape[1]))
    for owner, block in enumerate(blocks):
        # The owner sent its selected rows in the order they appear in global_indices.
        rows[(owners == owner).to(rows.device)] = block
    return rows
