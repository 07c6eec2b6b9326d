"""Timing of a callable (wall clock on the CPU, CUDA events on a GPU) and the machine's ceilings."""

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


# A CUDA timing round lasts about this long (enough calls that the events' ~1 us resolution is noise).
CUDA_ROUND_SECONDS = 0.02


def time_call(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1, budget_s: float = 20.0) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` calls; stops early past ``budget_s``.

    On CUDA devices this is :func:`cuda_event_time` with ``repeats`` rounds.
    """
    if device.startswith("cuda"):
        return cuda_event_time(fn, rounds=repeats)
    for _ in range(warmup):
        fn()
    times = []
    started = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > budget_s:
            break
    return Timing(min(times), statistics.median(times), len(times))


def cuda_event_time(fn: Callable[[], object], rounds: int = 5, max_calls: int = 200) -> Timing:
    """Seconds per call of ``fn`` on the current CUDA device: min / median over ``rounds`` rounds.

    A host synchronisation per call adds 10-20 us of launch and wake-up latency, which hides what
    a 10 us kernel does; here a round enqueues calls back to back between two CUDA events, as a
    pipeline that never waits on the host would. One warm-up call (module load, cuDNN / cuBLAS
    handles, the caching allocator), then one timed call sizes the rounds to about
    ``CUDA_ROUND_SECONDS`` each (1 to ``max_calls`` calls).
    """
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    one_call_s = max(start.elapsed_time(end) / 1e3, 1e-7)
    calls = int(min(max_calls, max(1, CUDA_ROUND_SECONDS // one_call_s)))
    per_call = []
    for _ in range(rounds):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) / 1e3 / calls)
    return Timing(min(per_call), statistics.median(per_call), rounds * calls)


def cuda_graph_time(fn: Callable[[], object], rounds: int = 5, calls: int = 20) -> Timing:
    """Seconds per call of ``fn`` replayed from a CUDA graph: the device's time alone.

    Back-to-back calls (:func:`cuda_event_time`) cannot run faster than the host issues them: a
    custom operator called from Python costs roughly 10-20 us of host time, more than a small
    kernel takes. Here ``calls`` calls are captured once into a graph (after warm-up calls on a
    side stream, as capture requires), and the replays are timed, so the figure is what the
    kernels take on the GPU; the gap to :func:`cuda_event_time` is the host's share.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per_call = []
    for _ in range(rounds):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) / 1e3 / calls)
    del graph
    return Timing(min(per_call), statistics.median(per_call), rounds * calls)


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


def cuda_fp32_flops(size: int = 8192) -> float:
    """Plain FP32 (no TF32) matrix-product rate in FLOP/s: the SIMT arithmetic ceiling."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a = torch.randn(size, size, device="cuda")
        b = torch.randn(size, size, device="cuda")
        timing = cuda_event_time(lambda: a @ b, rounds=3, max_calls=10)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * size**3 / timing.min_s
