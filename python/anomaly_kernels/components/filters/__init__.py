"""Image filters: the separable :class:`GaussianBlur2d` used to smooth anomaly maps, and
:func:`upsample_blur2d`, upsampling and blurring in one pass."""

from anomaly_kernels.components.filters.blur import GaussianBlur2d, gaussian_kernel1d
from anomaly_kernels.components.filters.upsample_blur import upsample_blur2d

__all__ = ["GaussianBlur2d", "gaussian_kernel1d", "upsample_blur2d"]
