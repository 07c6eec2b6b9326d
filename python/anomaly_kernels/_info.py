"""What the native extension was built with, and what this process can run."""

from __future__ import annotations

import torch

from anomaly_kernels import _build_info

def operators() -> list[str]:
    """Names of every operator the extension registered (each has a CPU kernel)."""
    prefix = "anomaly_kernels::"
    return sorted(
        name[len(prefix):]
        for name in torch._C._dispatch_get_registrations_for_dispatch_key("CPU")
        if name.startswith(prefix)
    )


def _has_kernel(op: str, dispatch_key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"anomaly_kernels::{op}", dispatch_key)


def build_info() -> dict:
    """Describe the compiled extension.

    Returns:
        dict with ``torch_built_against`` (torch version of the headers), ``torch_running``,
        ``stable_abi_target``, ``cuda_compiled`` (CUDA kernels inside the binary), ``operators``,
        ``cuda_registered`` (every operator has a CUDA kernel), ``cuda_archs``,
        ``nvcc``, ``cuda_available`` (a GPU is usable now), ``cxx_compiler``, ``build_type``,
        ``parallel_backend`` and ``cpu_threads`` (what the CPU kernels run on).

    Example:
        >>> import anomaly_kernels
        >>> sorted(anomaly_kernels.build_info())[:3]
        ['build_type', 'cpu_threads', 'cuda_archs']
    """
    parallel = torch.__config__.parallel_info()
    backend = next(
        (line.split(":", 1)[1].strip() for line in parallel.splitlines()
         if line.startswith("ATen parallel backend")),
        "unknown",
    )
    names = operators()
    return {
        "torch_built_against": _build_info.TORCH_VERSION,
        "torch_running": torch.__version__,
        "stable_abi_target": _build_info.STABLE_ABI_TARGET,
        "cuda_compiled": _build_info.CUDA_COMPILED,
        "operators": names,
        "cuda_registered": all(_has_kernel(op, "CUDA") for op in names),
        "cuda_archs": [a for a in _build_info.CUDA_ARCHS.split(";") if a],
        "nvcc": _build_info.NVCC_VERSION,
        "cuda_available": torch.cuda.is_available(),
        "cxx_compiler": _build_info.CXX_COMPILER,
        "build_type": _build_info.BUILD_TYPE,
        "parallel_backend": backend,
        "cpu_threads": torch.get_num_threads(),
    }
