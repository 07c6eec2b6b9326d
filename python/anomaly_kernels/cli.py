"""The ``anomaly-kernels`` command: ``bench`` and ``info``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import torch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomaly-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="time the native operators against their references")
    bench.add_argument("--full", action="store_true", help="anomalib-scale sizes (minutes) instead of the quick preset")
    bench.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="auto: the CPU, and CUDA when a GPU is available (default)",
    )
    bench.add_argument("--output", default="anomaly_kernels_bench.json", help="JSON file to write ('' for none)")
    bench.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sub.add_parser("info", help="print what the native extension was built with")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        from anomaly_kernels import build_info

        print(json.dumps(build_info(), indent=2))
        return 0

    from anomaly_kernels.bench import run_benchmarks

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    )
    record = run_benchmarks(devices, full=args.full, output=args.output or None,
                            progress=False if args.no_progress else None)
    return 0 if all(r["agree"] for r in record["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
