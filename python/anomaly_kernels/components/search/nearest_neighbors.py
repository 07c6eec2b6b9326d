"""Exact k-nearest-neighbour search of query rows in a memory bank, in chunks of bounded memory."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from anomaly_kernels._validation import all_finite

# Largest number of entries of one (chunk rows, bank rows) distance block: 2**24 float32 values
# are 64 MiB, large enough for efficient matrix products, small enough for any device.
DEFAULT_BLOCK_ELEMENTS = 1 << 24


def nearest_neighbors(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    chunk_size: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances and indices of the ``k`` bank rows nearest to every query row.

    The queries are processed in chunks of ``chunk_size`` rows against the whole bank, so at most
    a (chunk_size, M) block of distances exists at a time, never the full (N, M) matrix.

    Distance computation: the candidates of a chunk are ranked by the expanded squared distance
    ``‖q − b‖² = |q|² + |b|² − 2 q·b`` without its ``|q|²`` term, which is the same for every
    bank row of a query (one matrix product per chunk, the fast path on every device, with the
    bank norms computed once per call); then the distances of the ``k`` selected rows are
    recomputed directly as ``‖q − b‖``. The expanded form loses precision by cancellation when
    a query is close to a bank row relative to their norms (an exact match can come out as a
    small positive or even negative number); the direct recomputation makes every returned
    distance exact to floating-point rounding, including exact zeros for duplicates, at the
    cost of a (chunk_size, k, D) gather. The ranking itself can only be affected for candidates
    whose distances differ by less than that rounding error, i.e. practically equal ones.
    ``torch.cdist`` with ``"donot_use_mm_for_euclid_dist"`` is exact as well but avoids the
    matrix product and runs an order of magnitude slower for wide embeddings.

    Args:
        queries: (N, D) floating-point rows, finite.
        bank: (M, D) floating-point rows, finite, same dtype and device as ``queries``, M >= k.
        k: number of neighbours per query, >= 1.
        chunk_size: query rows per chunk; ``None`` picks the largest chunk whose distance block
            (chunk_size, M) and neighbour gather (chunk_size, k, D) each have at most
            :data:`DEFAULT_BLOCK_ELEMENTS` entries.

    Returns:
        ``(distances (N, k), indices (N, k) int64)``, sorted by increasing distance per row.
        Neither input is modified.

    Raises:
        TypeError: non-tensor or non-floating inputs, mismatched dtypes.
        ValueError: wrong shapes, an empty bank, ``k`` out of range, non-finite values, or a
            ``chunk_size`` below 1.

    Example:
        >>> bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> distances, indices = nearest_neighbors(torch.tensor([[3.0, 3.0]]), bank)
        >>> distances, indices
        (tensor([[1.]]), tensor([[1]]))
    """
    _check_rows("queries", queries)
    _check_rows("bank", bank)
    if bank.shape[0] == 0:
        raise ValueError(f"bank must hold at least one row, got shape {tuple(bank.shape)}")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries and bank must have the same number of columns, got {tuple(queries.shape)} and {tuple(bank.shape)}"
        )
    if queries.dtype != bank.dtype:
        raise TypeError(f"queries and bank must share a dtype, got {queries.dtype} and {bank.dtype}")
    if queries.device != bank.device:
        raise ValueError(f"queries and bank must be on the same device, got {queries.device} and {bank.device}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be an int in [1, {bank.shape[0]}] (the bank size), got {k!r}")
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_BLOCK_ELEMENTS // max(bank.shape[0], k * bank.shape[1]))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
    if not all_finite(queries):
        raise ValueError("queries must contain only finite values (no NaN or inf)")
    if not all_finite(bank):
        raise ValueError("bank must contain only finite values (no NaN or inf)")

    num_queries = queries.shape[0]
    distances = queries.new_empty((num_queries, k))
    indices = torch.empty((num_queries, k), dtype=torch.int64, device=queries.device)
    bank_sq_norms = bank.square().sum(dim=1)
    for start in range(0, num_queries, chunk_size):
        chunk = queries[start : start + chunk_size]
        # ``addmm`` fuses ``|b|² − 2 q·b`` into the product; ``|q|²`` is constant per row and
        # cannot change the ranking, so it is left out of the candidate search.
        partial_sq = torch.addmm(bank_sq_norms.unsqueeze(0), chunk, bank.T, beta=1.0, alpha=-2.0)
        if k == 1:
            # argmin returns the first minimum: ties go to the smallest bank index.
            candidates = partial_sq.argmin(dim=1, keepdim=True)
        else:
            candidates = partial_sq.topk(k, dim=1, largest=False).indices
        del partial_sq
        exact = torch.linalg.vector_norm(chunk.unsqueeze(1) - bank[candidates], dim=2)
        if k > 1:
            exact, order = exact.sort(dim=1, stable=True)
            candidates = candidates.gather(1, order)
        distances[start : start + chunk.shape[0]] = exact
        indices[start : start + chunk.shape[0]] = candidates
    return distances, indices


def _check_rows(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, D), got shape {tuple(tensor.shape)}")
