"""The ``anomaly-kernels`` command: ``bench``, ``bench-gpu``, ``bench-distributed``, ``fit``, ``predict``, ``export`` and ``info``.

A bad argument, file or folder ends the command with one line on stderr, ``error: <flag>: <why>``,
and exit code 2, before any expensive work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, List, NoReturn, Optional

import torch

DESCRIPTION = "Native CPU / CUDA kernels for anomaly detection: benchmarks, and training and scoring of PatchCore, PaDiM and DFKDE."
IMAGE_SIZE_RANGE = (32, 1024)  # the same bounds as anomaly_kernels.pipeline.fit.IMAGE_SIZE_RANGE
MAX_PROCESSES = 64

# The command-line flag of each parameter of the Python functions behind the commands.
FLAGS: Dict[str, str] = {
    "model": "--model", "output_dir": "--output", "data_root": "--data", "category": "--category",
    "image_size": "--image-size", "backbone": "--backbone", "pretrained": "--pretrained", "weights": "--weights",
    "accelerator": "--accelerator", "batch_size": "--batch-size", "seed": "--seed",
    "checkpoint": "--checkpoint", "input_path": "--input", "layers": "--layers", "n_features": "--n-features",
    "coreset_sampling_ratio": "--coreset-ratio", "num_neighbors": "--num-neighbors",
    "n_pca_components": "--pca-components", "packed_precision": "--packed-precision", "val_split": "--val-split", "val_split_ratio": "--val-ratio",
    "devices": "--devices", "strategy": "--strategy", "ddp_timeout": "--ddp-timeout", "overwrite": "--overwrite",
}
# The fit flags that set an argument of the model class: (flag's attribute, model argument).
MODEL_OPTION_FLAGS = (
    ("layers", "layers"), ("n_features", "n_features"), ("coreset_ratio", "coreset_sampling_ratio"),
    ("num_neighbors", "num_neighbors"), ("pca_components", "n_pca_components"),
    ("packed_precision", "packed_precision"),
)


class UsageError(Exception):
    """A bad command-line input, already phrased with its flag."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option's help; descriptions keep their line breaks.

    An option whose help already states its default, an unset one (None) and an on/off switch
    get no second "(default: ...)".
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool):
            return text
        if action.default == "":
            return text + " (default: none)"
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _int_in(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an int from ``low`` to ``high`` (inclusive; no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _ratio(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _open_ratio(text: str) -> float:
    """An argparse type: a number in (0, 1)."""
    value = _ratio(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bars (they go to stderr, and only when it is a terminal)")


def _add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the {what} of an earlier run in --output (refused without it)")


def _parser() -> argparse.ArgumentParser:
    from anomaly_kernels import __version__

    parser = _Parser(prog="anomaly-kernels", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        description = summary[0].upper() + summary[1:] + "." + (f"\n\n{textwrap.dedent(details).strip()}" if details else "")
        return sub.add_parser(name, help=summary, description=description, formatter_class=_Formatter)

    bench = command("bench", "time the native operators against their plain PyTorch references", """
        Prints, per operator and device, native and reference times, the speed-up, the throughput
        and whether the outputs agree; exit code 1 when an output disagrees.""")
    bench.add_argument("--full", action="store_true", help="anomalib-scale sizes (minutes) instead of the quick preset")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="auto: the CPU, and CUDA when a GPU is available")
    bench.add_argument("--output", default="anomaly_kernels_bench.json",
                       help="JSON file to write, in an existing folder ('' for none)")
    bench.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    gpu = command("bench-gpu", "time the CUDA kernels against cuDNN / cuBLAS / eager forms with CUDA events", """
        Needs a CUDA device. Exit code 1 when a native output disagrees with its reference.""")
    gpu.add_argument("--quick", action="store_true", help="blur, upsample+blur, scoring and projection only (~1 min)")
    gpu.add_argument("--only", nargs="+", default=None, metavar="OP",
                     help="operations to run, e.g. gaussian_blur mahalanobis kcenter_greedy (default: all)")
    gpu.add_argument("--output", default="anomaly_kernels_bench_gpu.json",
                     help="JSON file to write, in an existing folder ('' for none)")

    sharded = command("bench-distributed", "time the sharded coreset selection on 1..P local gloo processes", """
        Each process count selects a coreset from the same random memory bank; the result must be
        identical to one process's (exit code 1 otherwise).""")
    sharded.add_argument("--processes", type=_int_in(1, MAX_PROCESSES), nargs="+", default=[1, 2, 4], metavar="P",
                         help=f"process counts to time, each from 1 to {MAX_PROCESSES}")
    sharded.add_argument("--rows", type=_int_in(1), default=100_000, help="rows of the memory bank")
    sharded.add_argument("--dims", type=_int_in(1), default=256, help="feature dimension of the memory bank")
    sharded.add_argument("--coreset", type=_int_in(1), default=200, help="rows to select (at most --rows)")
    sharded.add_argument("--output", default="", help="JSON file to write, in an existing folder ('' for none)")

    low, high = IMAGE_SIZE_RANGE
    fit = command("fit", "train, validate and test a model; save it, its scores and heat maps", """
        Writes model.ckpt, scores.csv, a review panel heatmaps/<defect>/<image>.png per test image
        and its predicted mask masks/<defect>/<image>.png into --output. Without
        --data a synthetic dataset in MVTec AD layout is generated in <output>/synthetic; a later
        run reuses it when its --seed and --image-size are the same, and regenerates it otherwise.
        An earlier run's model.ckpt, scores.csv, heatmaps/ and masks/ are replaced only with --overwrite.""")
    fit.add_argument("--model", choices=["patchcore", "padim", "dfkde"], default="patchcore", help="the model to train")
    fit.add_argument("--data", default=None, help="root of a dataset in MVTec AD layout (default: generate a synthetic one)")
    fit.add_argument("--category", default=None,
                     help="category folder under --data; without --data one of carpet_like, grid_like, wood_like, "
                          "leather_like (default: carpet_like)")
    fit.add_argument("--image-size", type=_int_in(low, high), default=128, metavar="PIXELS",
                     help=f"side of the square input images, from {low} to {high}")
    fit.add_argument("--backbone", default=None, help="timm backbone name (default: the model's own)")
    fit.add_argument("--pretrained", choices=["auto", "download", "none"], default="auto",
                     help="auto: cached ImageNet weights if present, else random init (no network); "
                          "download: let timm fetch them; none: random init")
    fit.add_argument("--weights", default=None, metavar="FILE",
                     help="local backbone weights file (timm / torchvision state dict); overrides --pretrained")
    fit.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="where to train")
    fit.add_argument("--batch-size", type=_int_in(1), default=16, help="images per batch")
    fit.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="seed of the synthetic data, splits and sampling")
    fit.add_argument("--output", default="anomaly_kernels_run", metavar="FOLDER",
                     help="output folder (checkpoint, scores, heat maps)")
    _add_overwrite(fit, "checkpoint, scores and heat maps")
    models = fit.add_argument_group("model options (default: the model's own)")
    models.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                        help="backbone layers whose features are used, e.g. layer2 layer3")
    models.add_argument("--n-features", type=_int_in(1), default=None, metavar="N",
                        help="padim: feature channels kept (default: 100 for resnet18, 550 for wide_resnet50_2; "
                             "required for other backbones)")
    models.add_argument("--packed-precision", action="store_true", default=None,
                        help="padim: store the inverse covariances as upper triangles, half the memory, same scores "
                             "(wide_resnet50_2 at 256 px: 2.5 GB instead of 5 GB)")
    models.add_argument("--coreset-ratio", type=_ratio, default=None, metavar="RATIO",
                        help="patchcore: share of the patch features kept in the memory bank, in (0, 1] "
                             "(default: 0.1)")
    models.add_argument("--num-neighbors", type=_int_in(1), default=None, metavar="K",
                        help="patchcore: nearest memory-bank neighbours used to weight a score (default: 9)")
    models.add_argument("--pca-components", type=_int_in(1), default=None, metavar="N",
                        help="dfkde: principal components of the density (default: 16)")
    runs = fit.add_argument_group("validation and processes")
    runs.add_argument("--val-split", choices=["same_as_test", "from_test"], default="same_as_test",
                      help="same_as_test: thresholds are tuned on the test images (F1 optimistic); "
                           "from_test: a share of each label's test images is held out for validation")
    runs.add_argument("--val-ratio", type=_open_ratio, default=0.5, metavar="RATIO",
                      help="with --val-split from_test: the share of the test images used for validation")
    runs.add_argument("--devices", type=_int_in(1, MAX_PROCESSES), default=1, metavar="N",
                      help="processes (--accelerator cpu) or GPUs the training runs on; above 1 under --strategy")
    runs.add_argument("--strategy", choices=["ddp_spawn"], default="ddp_spawn",
                      help="how several processes are run: ddp_spawn starts them from this command "
                           "(for torchrun, use the Python API with strategy='ddp')")
    runs.add_argument("--ddp-timeout", type=_seconds, default=1800.0, metavar="SECONDS",
                      help="with --devices above 1: how long a process waits for the others in a collective "
                           "before the run fails (a frozen process otherwise blocks the rest)")
    _add_progress(fit)

    predict = command("predict", "scores (CSV), review panels and predicted masks (PNG) of a folder of images", """
        Rebuilds the model from a checkpoint written by 'anomaly-kernels fit' (its checksum is
        verified) or by Lightning's Trainer.save_checkpoint, and writes scores.csv and, for models
        with anomaly maps, a review panel heatmaps/<image file name>.png (image, heat map,
        predicted mask, outline) and the mask masks/<image file name>.png into --output. Sub-folders, other file
        types and unreadable files of --input are skipped, and listed.""")
    predict.add_argument("--checkpoint", required=True, metavar="FILE",
                         help="model.ckpt written by 'anomaly-kernels fit', a checkpoint of Trainer.save_checkpoint, "
                              "or a model.pt2 / model.onnx of 'anomaly-kernels export'")
    predict.add_argument("--input", required=True, metavar="PATH", help="a folder of images, or one image")
    predict.add_argument("--output", default="anomaly_kernels_predictions", metavar="FOLDER", help="output folder")
    predict.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="where to score")
    predict.add_argument("--batch-size", type=_int_in(1), default=16, help="images per batch")
    predict.add_argument("--image-size", type=_int_in(low, high), default=None, metavar="PIXELS",
                         help="side of the input images, for a checkpoint that does not record it "
                              "(default: the checkpoint's)")
    _add_overwrite(predict, "scores and heat maps")
    _add_progress(predict)

    export = command("export", "a fitted model as a torch.export program or an ONNX model, for deployment", """
        Traces the model of a checkpoint (backbone, scoring, anomaly maps, thresholds and
        normalisation) for any batch size and writes --output/model.pt2 (torch.export: the native
        operators, needs anomaly_kernels to run) or --output/model.onnx (standard ONNX operators
        only: ONNX Runtime runs it). 'anomaly-kernels predict --checkpoint' and
        anomaly_kernels.deploy.Inferencer run either.""")
    export.add_argument("--checkpoint", required=True, metavar="FILE",
                        help="model.ckpt written by 'anomaly-kernels fit', or a checkpoint of Trainer.save_checkpoint")
    export.add_argument("--format", choices=["torch", "onnx"], default="torch", help="what to write")
    export.add_argument("--output", default="anomaly_kernels_export", metavar="FOLDER", help="output folder")
    export.add_argument("--image-size", type=_int_in(low, high), default=None, metavar="PIXELS",
                        help="side of the input images, for a checkpoint that does not record it "
                             "(default: the checkpoint's)")
    _add_overwrite(export, "exported model")

    info = command("info", "print what the native extension was built with and what this process can run")
    info.add_argument("--json", action="store_true", help="print the description as JSON (for scripts)")
    return parser


def _fail(message: str) -> NoReturn:
    raise UsageError(" ".join(message.split()))


def _check_output_file(path: str, flag: str = "--output") -> None:
    """A JSON file the command writes at its end: its folder must exist and be writable now."""
    if not path:
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        _fail(f"{flag}: {path} is a folder; name a file")
    if not folder.is_dir():
        _fail(f"{flag}: the folder {folder} of {path} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        _fail(f"{flag}: {path} is not writable")


def _require_cuda(flag: str, value: str) -> None:
    if value in ("gpu", "cuda") and not torch.cuda.is_available():
        _fail(f"{flag} {value} was asked for, but no CUDA device is available")


def _input_error(error: BaseException) -> str:
    from anomaly_kernels.pipeline.inputs import one_line, parameter_of

    flag = FLAGS.get(parameter_of(error) or "")
    return f"{flag}: {one_line(error)}" if flag else one_line(error)


def _run_fit(args: argparse.Namespace) -> int:
    from anomaly_kernels.pipeline import fit_and_test

    _require_cuda("--accelerator", args.accelerator)
    options = {name: getattr(args, attribute) for attribute, name in MODEL_OPTION_FLAGS
               if getattr(args, attribute) is not None}
    result = fit_and_test(
        model=args.model, output_dir=args.output, data_root=args.data, category=args.category,
        image_size=args.image_size, backbone=args.backbone, pretrained=args.pretrained, weights=args.weights,
        accelerator=args.accelerator, batch_size=args.batch_size, seed=args.seed,
        progress=False if args.no_progress else None, model_options=options, val_split=args.val_split,
        val_split_ratio=args.val_ratio, devices=args.devices, strategy=args.strategy, ddp_timeout=args.ddp_timeout,
        overwrite=args.overwrite,
    )
    for note in result.notes:
        print(note, file=sys.stderr)
    print(result.data_note)
    print(result.weights_note)
    print("test metrics:")
    for name in sorted(result.metrics):
        value = result.metrics[name]
        print(f"  {name:<16} {'n/a' if value is None else f'{value:.4f}'}")
    print("stage times:")
    counts = {"feature extraction": result.images["train"], "scoring": result.images["test"]}
    for stage, seconds in result.stages.items():
        per_image = f" ({seconds / counts[stage] * 1e3:.1f} ms/image)" if counts.get(stage) else ""
        print(f"  {stage:<20} {seconds:8.2f} s{per_image}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"scores:     {result.scores_csv}")
    if result.heatmaps is not None:
        print(f"heat maps:  {result.heatmaps}")
        print(f"masks:      {result.heatmaps.parent / 'masks'}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from anomaly_kernels.deploy.predict import predict_folder  # a checkpoint goes on to the pipeline's

    _require_cuda("--accelerator", args.accelerator)
    result = predict_folder(args.checkpoint, args.input, args.output, accelerator=args.accelerator,
                            batch_size=args.batch_size, progress=False if args.no_progress else None,
                            image_size=args.image_size, overwrite=args.overwrite)
    if result["replaced"]:
        print(f"note: removed the earlier run's {', '.join(result['replaced'])} from {args.output}", file=sys.stderr)
    if result["skipped"]:
        print(f"warning: skipped {len(result['skipped'])} entries of {args.input}:", file=sys.stderr)
        for path, reason in result["skipped"]:
            print(f"  {path.name}: {reason}", file=sys.stderr)
    print(f"scored {result['images']} images")
    print(f"scores:     {result['scores_csv']}")
    if result["heatmaps"] is not None:
        print(f"heat maps:  {result['heatmaps']}")
        print(f"masks:      {Path(result['heatmaps']).parent / 'masks'}")
    return 0


def _info_table(info: dict) -> str:
    def text(value) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value)) or "-"
        return str(value) if value not in (None, "") else "-"

    labels = [
        ("torch_running", "torch (running)"), ("torch_built_against", "torch (built against)"),
        ("stable_abi_target", "stable ABI target"), ("cuda_compiled", "CUDA kernels compiled"),
        ("cuda_registered", "CUDA kernels registered"), ("cuda_archs", "CUDA architectures"),
        ("nvcc", "nvcc"), ("cuda_available", "CUDA device available"), ("cxx_compiler", "C++ compiler"),
        ("build_type", "build type"), ("parallel_backend", "CPU parallel backend"), ("cpu_threads", "CPU threads"),
    ]
    labels += [(key, key.replace("_", " ")) for key in info if key not in dict(labels) and key != "operators"]
    width = max(len(label) for _, label in labels + [("", "operators")]) + 2
    lines = [f"{label:<{width}}{text(info[key])}" for key, label in labels if key in info]
    operators = info.get("operators", [])
    wrapped = textwrap.wrap(", ".join(operators), 100 - width) or ["-"]
    lines.append(f"{f'operators ({len(operators)})':<{width}}{wrapped[0]}")
    lines += [" " * width + line for line in wrapped[1:]]
    return "\n".join(lines)


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "info":
        from anomaly_kernels import __version__, build_info

        info = build_info()
        print(json.dumps(info, indent=2) if args.json else f"anomaly_kernels {__version__}\n{_info_table(info)}")
        return 0
    if args.command == "bench-gpu":
        _check_output_file(args.output)
        from anomaly_kernels.bench.gpu_compare import all_comparisons

        known = sorted({name for name, _ in all_comparisons(quick=False)})
        unknown = [name for name in args.only or [] if name not in known]
        if unknown:
            _fail(f"--only: unknown operations {unknown}; choose from {known}")
        if not torch.cuda.is_available():
            _fail("bench-gpu needs a CUDA device, and none is available")
        from anomaly_kernels.bench.gpu_compare import run_gpu_comparison

        record = run_gpu_comparison(args.output or None, quick=args.quick, only=args.only)
        agree = all(r.get("agree", True) for r in record["results"])
        return 0 if agree and not record.get("failures") else 1
    if args.command == "bench-distributed":
        if args.coreset > args.rows:
            _fail(f"--coreset {args.coreset} is more than the {args.rows} rows of --rows")
        _check_output_file(args.output)
        from anomaly_kernels.bench.distributed import format_records, run_distributed_benchmark

        records = run_distributed_benchmark(args.processes, args.rows, args.dims, args.coreset)
        print(format_records(records))
        if args.output:
            with open(args.output, "w") as f:
                json.dump(records, f, indent=2)
        return 0 if all(r["identical_to_single_process"] for r in records) else 1
    if args.command in ("fit", "predict", "export"):
        from anomaly_kernels.pipeline.inputs import parameter_of

        try:
            if args.command == "export":
                from anomaly_kernels.deploy import export_model

                print(f"exported:   {export_model(args.checkpoint, args.format, args.output, args.image_size, args.overwrite)}")
                return 0
            return _run_fit(args) if args.command == "fit" else _run_predict(args)
        except (FileNotFoundError, ValueError) as error:  # bad paths or options: say so, no traceback
            raise UsageError(_input_error(error)) from None
        except (OSError, TypeError, RuntimeError) as error:
            if parameter_of(error) is None:  # not an input the user gave: a fault, keep its traceback
                raise
            raise UsageError(_input_error(error)) from None

    _require_cuda("--device", args.device)
    _check_output_file(args.output)
    from anomaly_kernels.bench import run_benchmarks

    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    )
    record = run_benchmarks(devices, full=args.full, output=args.output or None,
                            progress=False if args.no_progress else None)
    return 0 if all(r["agree"] for r in record["results"]) else 1


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run_command(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
