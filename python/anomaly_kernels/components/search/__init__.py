"""Search: exact k-nearest-neighbour search of query rows in a bank of rows (:func:`nearest_neighbors`)."""

from anomaly_kernels.components.search.nearest_neighbors import nearest_neighbors

__all__ = ["nearest_neighbors"]
