"""Dimensionality reduction: :class:`PCA` and :class:`SparseRandomProjection`."""

from anomaly_kernels.components.dimensionality_reduction.pca import PCA
from anomaly_kernels.components.dimensionality_reduction.random_projection import (
    NotFittedError,
    SparseRandomProjection,
)

__all__ = ["PCA", "SparseRandomProjection", "NotFittedError"]
