"""Statistical models: :class:`GaussianKDE` and :class:`MultiVariateGaussian`."""

from anomaly_kernels.components.stats.kde import GaussianKDE
from anomaly_kernels.components.stats.multi_variate_gaussian import MultiVariateGaussian

__all__ = ["GaussianKDE", "MultiVariateGaussian"]
