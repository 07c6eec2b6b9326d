"""Coreset sampling: :class:`KCenterGreedy` (PatchCore's memory-bank subsampling)."""

from anomaly_kernels.components.sampling.k_center_greedy import KCenterGreedy

__all__ = ["KCenterGreedy"]
