"""Shared test parameters: the devices native kernels are checked on.

CUDA cases are collected everywhere and skipped with a reason where no GPU is present, so a
CPU-only run reports exactly which GPU checks it did not perform.
"""

import pytest
import torch

import anomaly_kernels  # noqa: F401  (registers the operators)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def cuda_device() -> str:
    """"cuda", for the tests of what only the CUDA kernels do (their tiling); skipped with a reason
    where no GPU is present, and never run on the CPU only to be skipped there."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return "cuda"

