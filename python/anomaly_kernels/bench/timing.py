"""Wall-clock timing of a callable and the machine's memory bandwidth."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Timing:
    """Seconds per call over the measured repeats (after warm-up)."""

    min_s: float
    median_s: float
    repeats: int


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1, budget_s: float = 20.0) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` calls; stops early past ``budget_s``.

    CUDA work is synchronised around each call, so a time covers the whole kernel sequence.
    """
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    started = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > budget_s:
            break
    return Timing(min(times), statistics.median(times), len(times))


def memory_bandwidth_gbs(device: str, megabytes: int = 256) -> float:
    """Sustained copy bandwidth in GB/s (bytes read + bytes written), the best of 5 copies.

    A tensor copy is what a bandwidth-bound kernel can at best do on the same machine with the
    same threads, so kernel throughput is reported as a share of this figure.
    """
    n = megabytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, repeats=5, warmup=2)
    return 2 * n * 4 / timing.min_s / 1e9
