"""Native CPU and CUDA kernels behind the components API of industrial anomaly detection.

Importing the package loads the compiled extension, which registers every operator under
``torch.ops.anomaly_kernels``. The documented classes live in :mod:`anomaly_kernels.components`.
"""

import os

import torch  # loads libtorch before the extension that links against it

from anomaly_kernels import _build_info
from anomaly_kernels import _C  # noqa: F401  (registers the schemas and the CPU kernels)


def _load_cuda_kernels() -> None:
    # The CUDA kernels link against libtorch_cuda, so they sit in a library of their own, loaded
    # only beside a CUDA build of torch: the same wheel then imports with a CPU-only torch too
    # (without CUDA kernels, as build_info() reports).
    if not (_build_info.CUDA_COMPILED and torch.version.cuda):
        return
    path = os.path.join(os.path.dirname(_C.__file__), "_cuda_kernels.so")
    if not os.path.exists(path):
        raise ImportError(f"anomaly_kernels was built with CUDA kernels, but {path} is missing: reinstall the package")
    torch.ops.load_library(path)


_load_cuda_kernels()

from anomaly_kernels import ops  # noqa: E402  (after the kernels: ops registers Python kernels beside them)
from anomaly_kernels._info import build_info  # noqa: E402

__all__ = ["build_info", "ops"]
__version__ = "0.1.0"
