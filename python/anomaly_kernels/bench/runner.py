"""Runs the benchmark cases, prints the table and writes the JSON record."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import List, Optional

import torch
from tqdm.auto import tqdm

from anomaly_kernels._info import build_info
from anomaly_kernels.bench.cases import all_cases
from anomaly_kernels.bench.timing import memory_bandwidth_gbs, time_call


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> Optional[float]:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def machine_description() -> dict:
    """CPU, memory, GPU and software versions of this run."""
    info = {
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "build": build_info(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _ms(value: float) -> str:
    """Milliseconds to two decimals, or to a tenth of a microsecond below 0.1 ms."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"


def _format_table(rows: List[dict]) -> str:
    header = ["case", "device", "size", "native min/med ms", "reference min/med ms", "speed-up", "GB/s", "% bw", "agree"]
    lines = [header]
    for r in rows:
        lines.append([
            r["case"], r["device"], r["size"],
            f"{_ms(r['native_min_ms'])} / {_ms(r['native_median_ms'])}",
            f"{_ms(r['reference_min_ms'])} / {_ms(r['reference_median_ms'])}",
            f"{r['speedup']:.1f}x",
            f"{r['native_gbs']:.1f}",
            f"{r['bandwidth_share'] * 100:.0f}%",
            "yes" if r["agree"] else "NO",
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for j, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_benchmarks(
    devices: List[str], full: bool = False, output: Optional[str] = None, progress: Optional[bool] = None
) -> dict:
    """Run every case on each device; returns (and optionally writes) the JSON record.

    Args:
        devices: e.g. ["cpu"] or ["cpu", "cuda"].
        full: anomalib-scale sizes instead of the quick default preset.
        output: path of the JSON file to write (None: do not write).
        progress: show a progress bar (None: only on a terminal).
    """
    record = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "preset": "full" if full else "default",
        "machine": machine_description(),
        "bandwidth_gbs": {},
        "results": [],
    }
    plan = [(device, factory) for device in devices for factory in all_cases(device, full)]
    bar = tqdm(total=len(plan), desc="benchmarks", unit="case", disable=(None if progress is None else not progress))
    for device in devices:
        bar.set_postfix_str(f"{device} bandwidth")
        record["bandwidth_gbs"][device] = round(memory_bandwidth_gbs(device), 2)
    for device, factory in plan:
        for case in factory():
            bar.set_postfix_str(f"{case.name} {case.device}")
            native_out, ref_out = case.native(), case.reference()
            agree, detail = case.check(native_out, ref_out)
            del native_out, ref_out
            native_t = time_call(case.native, case.device, case.repeats)
            ref_t = time_call(case.reference, case.device, case.repeats)
            gbs = case.bytes_moved / native_t.min_s / 1e9
            record["results"].append({
                "case": case.name, "device": case.device, "size": case.size,
                "native_min_ms": native_t.min_s * 1e3, "native_median_ms": native_t.median_s * 1e3,
                "reference_min_ms": ref_t.min_s * 1e3, "reference_median_ms": ref_t.median_s * 1e3,
                "repeats": native_t.repeats, "speedup": ref_t.min_s / native_t.min_s,
                "bytes_moved": case.bytes_moved, "native_gbs": gbs,
                "bandwidth_share": gbs / record["bandwidth_gbs"][case.device],
                "agree": agree, "check": detail,
            })
        bar.update(1)
    bar.close()
    print(_format_table(record["results"]))
    for device, bw in record["bandwidth_gbs"].items():
        print(f"measured copy bandwidth on {device}: {bw:.1f} GB/s (read + write)")
    disagreements = [r for r in record["results"] if not r["agree"]]
    for r in disagreements:
        print(f"MISMATCH {r['case']} on {r['device']}: {r['check']}", file=sys.stderr)
    if output:
        with open(output, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {output}")
    return record
