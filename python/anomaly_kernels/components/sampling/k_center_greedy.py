"""KCenterGreedy: greedy k-center coreset selection on the native fused distance step."""

from __future__ import annotations

import time
from typing import List, Optional

import torch
from tqdm.auto import tqdm

from anomaly_kernels import ops
from anomaly_kernels._validation import all_finite
from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.sampling.coreset_rules import (
    PROJECTION_EPS,
    check_seed,
    coreset_size,
    distinct_picks,
    projects_features,
    seeded_start,
)

# Target duration of one native call between progress-bar updates.
CHUNK_SECONDS = 0.25
# Bytes the first call reads if no pass prunes (a CPU reads about 0.5 GB in a fraction of
# CHUNK_SECONDS; a GPU reads 1000 times that in a similar time). A larger first call on a GPU
# also means fewer calls: the CUDA kernel's bounds between centers last one call.
FIRST_CHUNK_BYTES = {"cpu": 5e8, "cuda": 5e11}


class KCenterGreedy:
    """Greedy k-center coreset: repeatedly add the point farthest from the points chosen so far.

    The result approximately minimises the largest distance from any embedding row to its
    nearest coreset row (a 2-approximation of the k-center problem). The whole selection loop
    runs natively (:func:`anomaly_kernels.ops.kcenter_greedy_`), in chunks of about a quarter
    second between progress-bar updates; each iteration is one pass over the features that fuses
    the distance to the newest center, the running-minimum update and the argmax, without
    (N, D) temporaries.

    Args:
        embedding: (N, D) features. 2-D embeddings are first reduced with
            ``SparseRandomProjection(eps=0.9)`` (distances are preserved up to the JL
            distortion) when its target dimension is below D; otherwise, and for embeddings with
            more dimensions (flattened to (N, -1)), distances are measured on the rows as they are.
        sampling_ratio: fraction of rows to keep, in (0, 1]; ``coreset_size = int(N * ratio)``
            must be at least 1.
        progress: show a progress bar over the iterations (``None``: only on a terminal).
        prune: skip rows, and on the CPU whole groups of rows sharing a nearest center, that
            the triangle inequality proves unaffected by a new center (exact: the selection is
            the same either way; it saves reads on clustered data).
        feature_dtype: storage of the (projected) features during the selection. float32 (the
            default) is exact; bfloat16 halves the memory and the bytes read per iteration, and
            the selection is then that of the bfloat16-rounded features: approximate (a
            different but equally valid coreset on near-ties, coverage radius within about 1%).
        seed: ``None`` (default): the projection and the start row come from torch's global RNG.
            An int in [0, 2**63): the projection is ``SparseRandomProjection(eps=0.9,
            random_state=seed)`` and the start row is drawn from ``Generator().manual_seed(seed)``
            (:mod:`~anomaly_kernels.components.sampling.coreset_rules`), independent of the global
            RNG; :func:`anomaly_kernels.distributed.distributed_coreset` makes the same choices, so
            with the same seed it selects the same rows from rows sharded over processes.

    Start point: with no ``selected_idxs``, the first center is a random row (see ``seed``) and
    it is part of the returned coreset, so the coreset covers every row including the start.
    This differs from anomalib 0.3.x, which left the start row out.

    Distances are Euclidean (not squared); ties go to the smallest row index. Returned indices
    are distinct: if the coreset size exceeds the number of distinct rows, the remaining slots
    take the smallest unselected indices (every row is then already at distance 0; see
    :func:`~anomaly_kernels.components.sampling.coreset_rules.distinct_picks`).

    Example:
        >>> embedding = torch.randn(1000, 64)
        >>> sampler = KCenterGreedy(embedding, sampling_ratio=0.01)
        >>> len(sampler.select_coreset_idxs())
        10
        >>> sampler.sample_coreset().shape
        torch.Size([10, 64])
    """

    def __init__(
        self,
        embedding: torch.Tensor,
        sampling_ratio: float,
        *,
        progress: Optional[bool] = None,
        prune: bool = True,
        feature_dtype: torch.dtype = torch.float32,
        seed: Optional[int] = None,
    ) -> None:
        if not isinstance(embedding, torch.Tensor):
            raise TypeError(f"embedding must be a torch.Tensor, got {type(embedding).__name__}")
        if embedding.dim() < 2:
            raise ValueError(f"embedding must be at least 2-D (N, D), got shape {tuple(embedding.shape)}")
        if embedding.numel() == 0:
            raise ValueError(f"embedding must not be empty, got shape {tuple(embedding.shape)}")
        if not embedding.is_floating_point():
            raise TypeError(f"embedding must be a floating tensor, got {embedding.dtype}")
        size = coreset_size(embedding.shape[0], sampling_ratio)
        if seed is not None:
            seed = check_seed(seed)
        if not all_finite(embedding):
            raise ValueError("embedding contains NaN or infinite values")

        self.embedding = embedding
        self.sampling_ratio = sampling_ratio
        self.coreset_size = size
        self.seed = seed
        self.n_observations = embedding.shape[0]
        self.progress = progress
        self.prune = prune
        if feature_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"feature_dtype must be torch.float32 or torch.bfloat16, got {feature_dtype}")
        self.feature_dtype = feature_dtype
        self.model = SparseRandomProjection(eps=PROJECTION_EPS, random_state=seed)
        self.features: Optional[torch.Tensor] = None
        self.min_distances: Optional[torch.Tensor] = None

    def _prepare_features(self) -> torch.Tensor:
        """(N, d) contiguous features (in ``feature_dtype``) the distances are measured on."""
        n, dims = self.embedding.shape[0], self.embedding[0].numel()
        if self.embedding.dim() == 2 and projects_features(n, dims):
            self.model.fit(self.embedding)
            features = self.model.transform(self.embedding)
        else:
            features = self.embedding.reshape(self.embedding.shape[0], -1)
        return features.to(self.feature_dtype).contiguous()

    def reset_distances(self) -> None:
        """Forget the distances to the chosen centers."""
        self.min_distances = None

    def update_distances(self, cluster_centers: List[int]) -> None:
        """Lower every row's distance to its nearest center by the given new centers.

        Args:
            cluster_centers: row indices of the new centers (an empty list changes nothing).
        """
        if not cluster_centers:
            return
        if self.features is None:
            self.features = self._prepare_features()
        n = self.features.shape[0]
        for index in cluster_centers:
            if not 0 <= int(index) < n:
                raise ValueError(f"cluster_centers must be row indices in [0, {n}), got {index}")
        device = self.features.device
        if self.min_distances is None:
            self.min_distances = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
        centers = torch.tensor([int(i) for i in cluster_centers], dtype=torch.int64, device=device)
        nearest = torch.full((n,), -1, dtype=torch.int32, device=device)  # not kept: no pruning here
        ops.kcenter_greedy_(self.features, self.min_distances, nearest, centers, 0, len(centers), pick=False, prune=False)

    def get_new_idx(self) -> int:
        """Index of the row farthest from its nearest center (ties: smallest index).

        Raises:
            ValueError: no distances yet (call :meth:`update_distances` first).
        """
        if self.min_distances is None:
            raise ValueError("no distances to pick from: call update_distances with at least one center first")
        return int(torch.argmax(self.min_distances))

    def select_coreset_idxs(self, selected_idxs: Optional[List[int]] = None) -> List[int]:
        """Greedily choose ``coreset_size`` rows that minimise the largest distance to the coreset.

        Args:
            selected_idxs: rows already chosen (they count as centers and are not returned).
                ``None`` or empty: start from a random row (see ``seed``), which is returned first.

        Returns:
            ``coreset_size`` distinct row indices, in the order they were chosen.
        """
        selected_idxs = [int(i) for i in (selected_idxs or [])]
        n = self.n_observations
        for index in selected_idxs:
            if not 0 <= index < n:
                raise ValueError(f"selected_idxs must be row indices in [0, {n}), got {index}")
        if len(set(selected_idxs)) + self.coreset_size > n:
            raise ValueError(
                f"selected_idxs must leave at least coreset_size ({self.coreset_size}) of the {n} rows unselected, "
                f"got {len(set(selected_idxs))} selected rows"
            )
        self.features = self._prepare_features()
        device = self.features.device
        # centers = the given centers (selected_idxs, or the start row) followed by the picks;
        # the native passes fill it in place, so indices never leave the device mid-selection.
        # The start is drawn after the projection: without a seed both come from the global RNG,
        # in this order.
        given = selected_idxs or [self._start_row()]
        centers = torch.empty(len(given) + self.coreset_size - (0 if selected_idxs else 1), dtype=torch.int64)
        centers[: len(given)] = torch.tensor(given)
        centers = centers.to(device)
        self.min_distances = run_greedy_passes(
            self.features, centers, len(given), self.coreset_size, self.prune, self.progress, "k-center greedy"
        )
        picks = centers[len(given) - (0 if selected_idxs else 1) :]
        return distinct_picks(picks.tolist(), n, exclude=selected_idxs)

    def _start_row(self) -> int:
        """The first center: from ``seed`` when given, else from torch's global RNG."""
        if self.seed is not None:
            return seeded_start(self.n_observations, self.seed)
        return int(torch.randint(self.n_observations, (1,)).item())

    def sample_coreset(self, selected_idxs: Optional[List[int]] = None) -> torch.Tensor:
        """The coreset rows of the original embedding: (coreset_size, *embedding.shape[1:])."""
        idxs = self.select_coreset_idxs(selected_idxs)
        return self.embedding[idxs]


def pad_to_vector_rows(features: torch.Tensor) -> torch.Tensor:
    """(N, d) rows widened with zero columns to a multiple of 16 bytes; distances are unchanged.

    The CUDA passes read a row with 16-byte loads only when every row starts on a 16-byte
    boundary; a 303-float row (PatchCore's projection of 219,520 rows) would take the scalar path,
    about 20 % slower per pass. One copy per selection, against thousands of passes.

    Args:
        features: (N, d) contiguous float32 or bfloat16 rows.

    Returns:
        ``features`` itself when d already fits, else a new (N, d') tensor, d' > d.
    """
    per_vector = 16 // features.element_size()
    width = features.shape[1]
    if width % per_vector == 0:
        return features
    padded = features.new_zeros(features.shape[0], width + (-width) % per_vector)
    padded[:, :width] = features
    return padded


def run_greedy_passes(
    features: torch.Tensor,
    centers: torch.Tensor,
    given: int,
    coreset_size: int,
    prune: bool,
    progress: Optional[bool],
    description: str,
) -> torch.Tensor:
    """Complete a greedy selection in place with the native passes, in progress-bar chunks.

    Args:
        features: (N, d) contiguous float32 or bfloat16 rows.
        centers: (given + picks,) int64 on the features' device; the first ``given`` entries are
            the starting centers, the rest are filled with the picks in order.
        given: number of starting centers (>= 1).
        coreset_size: the progress bar's total (the picks plus any starting center returned).
        prune: use the exact triangle-inequality pruning.
        progress: show the bar (``None``: only on a terminal).

    Returns:
        (N,) float32 distance of every row to its nearest center, all centers included.
    """
    if features.is_cuda:
        features = pad_to_vector_rows(features)
    n, dims = features.shape
    min_distances = torch.full((n,), float("inf"), dtype=torch.float32, device=features.device)
    nearest = torch.full((n,), -1, dtype=torch.int32, device=features.device)

    def passes(begin: int, end: int, pick: bool) -> None:
        ops.kcenter_greedy_(features, min_distances, nearest, centers, begin, end, pick, prune)

    passes(0, given - 1, pick=False)
    # The first chunk reads about FIRST_CHUNK_BYTES; later ones are sized to take about
    # CHUNK_SECONDS: pruned passes read far less than the whole bank, and the native kernels'
    # pruning pays off over runs of passes within one call. The selection does not depend on
    # the chunking.
    first_bytes = FIRST_CHUNK_BYTES.get(features.device.type, FIRST_CHUNK_BYTES["cpu"])
    chunk = max(1, int(first_bytes // (n * dims * features.element_size())))
    last = centers.shape[0] - 1
    with tqdm(
        total=coreset_size, desc=description, unit="pt", leave=False,
        disable=(None if progress is None else not progress),
    ) as bar:
        bar.update(coreset_size - (last - (given - 1)))
        begin = given - 1
        while begin < last:
            end = min(begin + chunk, last)
            started = time.perf_counter()
            passes(begin, end, pick=True)
            elapsed = time.perf_counter() - started
            bar.update(end - begin)
            begin = end
            chunk = max(1, min(4 * chunk, int(chunk * CHUNK_SECONDS / max(elapsed, 1e-6))))
    passes(last, last + 1, pick=False)  # the last pick covers itself: the distances are final
    return min_distances

