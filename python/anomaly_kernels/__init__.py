"""Native CPU and CUDA kernels behind the components API of industrial anomaly detection.

Importing the package loads the compiled extension, which registers every operator under
``torch.ops.anomaly_kernels``. The documented classes live in :mod:`anomaly_kernels.components`.
"""

import torch  # noqa: F401  (loads libtorch before the extension that links against it)

from anomaly_kernels import _C  # noqa: F401  (registers the native operators)
from anomaly_kernels import ops
from anomaly_kernels._info import build_info

__all__ = ["build_info", "ops"]
__version__ = "0.1.0"
