"""The nearest-neighbour search, kept importable from its former place; it lives in :mod:`anomaly_kernels.components.search`."""

from anomaly_kernels.components.search.nearest_neighbors import DEFAULT_BLOCK_ELEMENTS, nearest_neighbors

__all__ = ["DEFAULT_BLOCK_ELEMENTS", "nearest_neighbors"]
