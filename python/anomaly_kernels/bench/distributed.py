"""Sharded coreset selection on 1..P local processes (gloo): time and communication share.

Each process holds 1/P of the rows of the same synthetic memory bank and runs
:func:`anomaly_kernels.distributed.sharded_k_center_greedy`; rank 0 reports the wall time of the
selection and the share spent in the broadcast + all-reduce of every iteration (including
waiting for the slowest rank). The selection is checked to equal the single-process one.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from typing import List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anomaly_kernels.distributed import sharded_k_center_greedy
from anomaly_kernels.reference import kcenter_greedy


def _bank(rows: int, dims: int) -> torch.Tensor:
    return torch.randn(rows, dims, generator=torch.Generator().manual_seed(0))


def _worker(rank: int, world: int, store: str, rows: int, dims: int, coreset: int, threads: int, out: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        bank = _bank(rows, dims)
        first, last = rank * rows // world, (rank + 1) * rows // world
        shard = bank[first:last].contiguous()
        del bank
        timings: dict = {}
        dist.barrier()
        started = time.perf_counter()
        chosen = sharded_k_center_greedy(shard, coreset, 0, progress=False, timings=timings)
        elapsed = time.perf_counter() - started
        if rank == 0:
            torch.save({"chosen": chosen, "elapsed": elapsed, **timings}, out)
    finally:
        dist.destroy_process_group()


def run_distributed_benchmark(processes: List[int], rows: int, dims: int, coreset: int) -> List[dict]:
    """Time the sharded selection for each process count; returns one record per count."""
    expected = kcenter_greedy(_bank(rows, dims), coreset, 0).tolist()
    cores = os.cpu_count() or 1
    records = []
    for world in processes:
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "rank0.pt")
            threads = max(1, cores // world)
            mp.start_processes(_worker, args=(world, os.path.join(folder, "store"), rows, dims, coreset, threads, out),
                               nprocs=world, join=True, start_method="spawn")
            result = torch.load(out)
        records.append({
            "processes": world, "threads_per_process": threads, "rows": rows, "dims": dims, "coreset": coreset,
            "seconds": result["elapsed"], "communication_share": result["communication"] / result["elapsed"],
            "step_seconds": result["step"], "identical_to_single_process": result["chosen"] == expected,
        })
    return records


def format_records(records: List[dict]) -> str:
    """A small table of the records."""
    lines = ["processes  threads  seconds  communication  identical", "---------  -------  -------  -------------  ---------"]
    for r in records:
        lines.append(f"{r['processes']:>9}  {r['threads_per_process']:>7}  {r['seconds']:>7.2f}  "
                     f"{r['communication_share'] * 100:>12.0f}%  {'yes' if r['identical_to_single_process'] else 'NO':>9}")
    return "\n".join(lines)
