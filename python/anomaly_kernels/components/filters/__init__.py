"""Image filters: the separable :class:`GaussianBlur2d` used to smooth anomaly maps."""

from anomaly_kernels.components.filters.blur import GaussianBlur2d, gaussian_kernel1d

__all__ = ["GaussianBlur2d", "gaussian_kernel1d"]
