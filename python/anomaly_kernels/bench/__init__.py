"""Benchmarks of the native operators against their plain PyTorch references.

``anomaly-kernels bench`` (or ``python -m anomaly_kernels bench``) runs every case of
:mod:`anomaly_kernels.bench.cases` on the CPU and, when available, on CUDA; it checks that native
and reference outputs agree, prints a table and writes a JSON record. Recorded results of
reference machines live in the repository's ``bench/results/``.
"""

from anomaly_kernels.bench.runner import run_benchmarks

__all__ = ["run_benchmarks"]
