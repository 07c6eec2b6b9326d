"""The rules every k-center-greedy coreset selection follows, in one process or sharded over ranks.

:class:`~anomaly_kernels.components.sampling.KCenterGreedy` (one process) and
:func:`anomaly_kernels.distributed.distributed_coreset` (rows sharded over ranks) take their
size, seeded choices and repeated-pick semantics from here, so that a one-process selection
with a seed equals a multi-process one with that seed over the same rows in rank order:

- :func:`check_sampling_ratio` and :func:`coreset_size`: the one check of a sampling ratio.
- :func:`check_seed`, :func:`coreset_projection` and :func:`seeded_start`: what a seed fixes,
  the projection the distances are measured in and the first center.
- :func:`distinct_picks`: the one semantics of repeated picks (they are replaced).
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, List, Optional

import torch

from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.dimensionality_reduction.random_projection import johnson_lindenstrauss_min_dim

# Distortion of the projection applied before the selection (PatchCore's choice).
PROJECTION_EPS = 0.9
# Seeds feed torch.Generator.manual_seed and SparseRandomProjection(random_state): the
# non-negative int64 range suits both and survives a collective as an int64 tensor.
SEED_LIMIT = 2**63


def check_sampling_ratio(sampling_ratio: Any, name: str = "sampling_ratio") -> float:
    """``sampling_ratio`` as a float in (0, 1], or a TypeError/ValueError naming ``name``."""
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, numbers.Real):
        raise TypeError(f"{name} must be a float in (0, 1], got {sampling_ratio!r}")
    if not 0.0 < float(sampling_ratio) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {sampling_ratio}")
    return float(sampling_ratio)


def coreset_size(rows: int, sampling_ratio: Any, name: str = "sampling_ratio") -> int:
    """Rows a coreset keeps: ``int(rows * sampling_ratio)``, which must be at least 1.

    Args:
        rows: number of rows selected from (all ranks' rows for a sharded selection).
        sampling_ratio: fraction in (0, 1].
        name: the argument named in errors.

    Raises:
        TypeError / ValueError: a ratio outside (0, 1], or one that keeps no row of ``rows``.
    """
    ratio = check_sampling_ratio(sampling_ratio, name)
    size = int(rows * ratio)
    if size < 1:
        hint = f"; use a ratio of at least {1.0 / rows:.3g}" if rows > 0 else ""
        raise ValueError(f"{name} {sampling_ratio} of {rows} rows selects no row{hint}")
    return size


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2**63), or a TypeError/ValueError naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, 2**63) or None, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be in [0, 2**63), got {seed}")
    return int(seed)


def projects_features(rows: int, dims: int) -> bool:
    """Whether (rows, dims) features are projected first: the Johnson-Lindenstrauss bound is below ``dims``."""
    return johnson_lindenstrauss_min_dim(rows, PROJECTION_EPS) < dims


def coreset_projection(rows: int, dims: int, seed: Optional[int]) -> Optional[SparseRandomProjection]:
    """The fitted projection a selection over (rows, dims) features measures in, or ``None`` for none.

    ``SparseRandomProjection(eps=0.9, random_state=seed)`` sized for ``rows`` rows when
    :func:`projects_features`; only the shape is read, so every rank of a sharded selection
    builds the same matrix from the global row count. ``seed`` ``None`` draws the matrix from
    torch's global RNG.
    """
    if not projects_features(rows, dims):
        return None
    projection = SparseRandomProjection(eps=PROJECTION_EPS, random_state=seed)
    projection.fit(torch.empty(rows, dims, device="meta"))  # only the shape matters
    return projection


def seeded_start(rows: int, seed: int) -> int:
    """The first center of a seeded selection: a row in [0, rows) drawn from ``Generator().manual_seed(seed)``."""
    return int(torch.randint(rows, (1,), generator=torch.Generator().manual_seed(seed)))


def distinct_picks(picks: Iterable[int], rows: int, exclude: Iterable[int] = ()) -> List[int]:
    """``picks`` with every repeat (and every pick in ``exclude``) replaced by the smallest unused row index.

    The greedy rule repeats a pick only once every row is at distance 0 from the coreset (more
    coreset slots than distinct rows): any row not yet chosen is then an equally good center,
    and taking the smallest unused indices keeps the result deterministic. Every selection in
    the package returns its picks through here, so a coreset never holds an index twice,
    whatever the number of processes.

    Args:
        picks: row indices in selection order.
        rows: number of rows, so that spare indices lie in [0, rows).
        exclude: indices that count as taken already (e.g. given starting centers).

    Returns:
        A new list of distinct indices, in selection order.
    """
    indices = [int(i) for i in picks]
    seen = {int(i) for i in exclude}
    repeats = []
    for position, index in enumerate(indices):
        if index in seen:
            repeats.append(position)
        seen.add(index)
    if repeats:
        spare = (i for i in range(rows) if i not in seen)
        for position in repeats:
            indices[position] = next(spare)
    return indices
