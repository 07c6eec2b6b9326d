"""The ``anomaly-kernels`` command: ``bench``, ``bench-gpu``, ``fit``, ``predict`` and ``info``."""

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

    gpu = sub.add_parser("bench-gpu", help="CUDA kernels against cuDNN / cuBLAS / eager forms, CUDA-event timed")
    gpu.add_argument("--quick", action="store_true", help="blur, upsample+blur, scoring and projection only (~1 min)")
    gpu.add_argument("--only", nargs="+", default=None, metavar="OP",
                     help="operations to run, e.g. gaussian_blur mahalanobis kcenter_greedy")
    gpu.add_argument("--output", default="anomaly_kernels_bench_gpu.json", help="JSON file to write ('' for none)")

    sharded = sub.add_parser("bench-distributed", help="sharded coreset selection on 1..P local gloo processes")
    sharded.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    sharded.add_argument("--rows", type=int, default=100_000)
    sharded.add_argument("--dims", type=int, default=256)
    sharded.add_argument("--coreset", type=int, default=200)
    sharded.add_argument("--output", default="", help="JSON file to write ('' for none)")

    fit = sub.add_parser("fit", help="train, validate and test a model; save it and its heat maps")
    fit.add_argument("--model", choices=["patchcore", "padim", "dfkde"], default="patchcore")
    fit.add_argument("--data", default=None, help="root of a dataset in MVTec AD layout (default: generate a synthetic one)")
    fit.add_argument("--category", default=None, help="category folder under --data (synthetic default: carpet_like)")
    fit.add_argument("--image-size", type=int, default=128, help="side of the square input images (default 128)")
    fit.add_argument("--backbone", default=None, help="timm backbone (default: the model's own)")
    fit.add_argument("--pretrained", choices=["auto", "download", "none"], default="auto",
                     help="auto: cached ImageNet weights if present, else random init (no network); "
                          "download: let timm fetch them; none: random init")
    fit.add_argument("--weights", default=None, help="local backbone weights file (timm/torchvision state dict)")
    fit.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--output", default="anomaly_kernels_run", help="output folder (checkpoint, scores, heat maps)")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    predict = sub.add_parser("predict", help="anomaly maps (PNG overlays) and scores (CSV) of a folder of images")
    predict.add_argument("--checkpoint", required=True, help="model.ckpt written by 'anomaly-kernels fit'")
    predict.add_argument("--input", required=True, help="a folder of images, or one image")
    predict.add_argument("--output", default="anomaly_kernels_predictions", help="output folder")
    predict.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    sub.add_parser("info", help="print what the native extension was built with")
    return parser


def _run_fit(args: argparse.Namespace) -> int:
    from anomaly_kernels.pipeline import fit_and_test

    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("error: --accelerator gpu was asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    result = fit_and_test(
        model=args.model, output_dir=args.output, data_root=args.data, category=args.category,
        image_size=args.image_size, backbone=args.backbone, pretrained=args.pretrained, weights=args.weights,
        accelerator=args.accelerator, batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress,
    )
    print(result.data_note)
    print(result.weights_note)
    print("test metrics:")
    for name in sorted(result.metrics):
        print(f"  {name:<16} {result.metrics[name]:.4f}")
    print("stage times:")
    counts = {"feature extraction": result.images["train"], "scoring": result.images["test"]}
    for stage, seconds in result.stages.items():
        per_image = f" ({seconds / counts[stage] * 1e3:.1f} ms/image)" if counts.get(stage) else ""
        print(f"  {stage:<20} {seconds:8.2f} s{per_image}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"scores:     {result.scores_csv}")
    if result.heatmaps is not None:
        print(f"heat maps:  {result.heatmaps}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from anomaly_kernels.pipeline import predict_folder

    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("error: --accelerator gpu was asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    result = predict_folder(args.checkpoint, args.input, args.output, accelerator=args.accelerator,
                            batch_size=args.batch_size, progress=not args.no_progress)
    print(f"scored {result['images']} images")
    print(f"scores:     {result['scores_csv']}")
    if result["heatmaps"] is not None:
        print(f"heat maps:  {result['heatmaps']}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        from anomaly_kernels import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    if args.command == "bench-gpu":
        if not torch.cuda.is_available():
            print("error: bench-gpu needs a CUDA device, and none is available", file=sys.stderr)
            return 2
        from anomaly_kernels.bench.gpu_compare import run_gpu_comparison

        record = run_gpu_comparison(args.output or None, quick=args.quick, only=args.only)
        return 0 if all(r.get("agree", True) for r in record["results"]) else 1
    if args.command == "bench-distributed":
        from anomaly_kernels.bench.distributed import format_records, run_distributed_benchmark

        records = run_distributed_benchmark(args.processes, args.rows, args.dims, args.coreset)
        print(format_records(records))
        if args.output:
            with open(args.output, "w") as f:
                json.dump(records, f, indent=2)
        return 0 if all(r["identical_to_single_process"] for r in records) else 1
    if args.command in ("fit", "predict"):
        try:
            return _run_fit(args) if args.command == "fit" else _run_predict(args)
        except (FileNotFoundError, ValueError) as error:  # bad paths or options: say so, no traceback
            print(f"error: {error}", file=sys.stderr)
            return 2

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
