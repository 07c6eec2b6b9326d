"""The CUDA kernels against what a GPU user would otherwise run, at the models' sizes.

Each comparison times the native operator and the plain-PyTorch forms a GPU user already has
(cuDNN convolutions with ``cudnn.benchmark`` off and on, cuBLAS batched matmul, dense GEMM in FP32
and TF32, the per-position fit loop), all with CUDA events over back-to-back calls
(:func:`~anomaly_kernels.bench.timing.cuda_event_time`), and reports each form's time against
the floor: the least bytes a call must move over the measured copy bandwidth, or the least
arithmetic over the measured FP32 rate, whichever is longer. TF32 is off except in forms named
``tf32``, so the agreement check compares exact forms.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from anomaly_kernels import ops
from anomaly_kernels.bench.cases import clustered_embedding, coverage_radius
from anomaly_kernels.bench.runner import machine_description
from anomaly_kernels.bench.timing import cuda_event_time, cuda_fp32_flops, cuda_graph_time, memory_bandwidth_gbs
from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.dimensionality_reduction.random_projection import johnson_lindenstrauss_min_dim
from anomaly_kernels.components.filters.blur import gaussian_kernel1d
from anomaly_kernels.components.filters.upsample_blur import upsample_blur2d
from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.packed_precision import pack_upper_triangle


@dataclass
class Comparison:
    """One size of one operation: ``forms["native"]`` and its plain-PyTorch alternatives.

    ``check(native_out, first_alternative_out)`` returns (agree, detail). ``target_ms`` is the
    time the native form is meant to reach on an H100 / H200 (None: no target).
    """

    name: str
    size: str
    forms: Dict[str, Callable[[], object]]
    floor_bytes: float
    check: Optional[Callable[[object, object], Tuple[bool, str]]] = None
    floor_flops: float = 0.0
    target_ms: Optional[float] = None
    rounds: int = 5
    # Forms also timed as CUDA-graph replays (reported as "<form>_in_cuda_graph"): the device's
    # time without the host's per-call cost, for the per-image paths whose kernels take less
    # time than a Python call does.
    graph_forms: Tuple[str, ...] = ()
    # Forms that run the same computation as ``native`` on another path its dispatch could take
    # (another kernel, tile size or grid, chosen by an environment knob): one that beats
    # ``native`` by more than ROUTE_MARGIN is reported, as the default to change.
    route_forms: Tuple[str, ...] = ()


# A route form must be this much faster than ``native`` to be reported (run-to-run spread of
# the same call on one machine is about 3 %).
ROUTE_MARGIN = 0.05


def faster_route(forms: Dict[str, dict], route_forms: Tuple[str, ...], margin: float = ROUTE_MARGIN) -> Optional[str]:
    """The fastest of ``route_forms`` if it beats ``forms["native"]`` by more than ``margin``.

    Args:
        forms: form name -> ``{"min_ms": ...}`` (or ``{"error": ...}``), as a result row holds.
        route_forms: names of the forms that are other routes of the native operator.

    Example:
        >>> faster_route({"native": {"min_ms": 1.0}, "native_tile64": {"min_ms": 0.8}}, ("native_tile64",))
        'native_tile64'
        >>> faster_route({"native": {"min_ms": 1.0}, "native_tile64": {"min_ms": 0.98}}, ("native_tile64",)) is None
        True
    """
    native = forms.get("native", {}).get("min_ms")
    timed = [(forms[name]["min_ms"], name) for name in route_forms if "min_ms" in forms.get(name, {})]
    if native is None or not timed:
        return None
    best_ms, best = min(timed)
    return best if best_ms < native * (1 - margin) else None


@contextlib.contextmanager
def _flags(tf32: bool = False, cudnn_benchmark: bool = False):
    backends = torch.backends
    saved = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark)
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = tf32
    backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark = saved


def _with_flags(fn: Callable[[], object], **flags) -> Callable[[], object]:
    def run():
        with _flags(**flags):
            return fn()

    return run


def _with_environment(fn: Callable[[], object], name: str, value: str) -> Callable[[], object]:
    """``fn`` with the environment variable ``name`` set to ``value`` (a kernel's tuning knob)."""

    def run():
        saved = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if saved is None:
                del os.environ[name]
            else:
                os.environ[name] = saved

    return run


def _relative_check(tol: float) -> Callable[[torch.Tensor, torch.Tensor], Tuple[bool, str]]:
    """Finite values within ``tol`` of the reference's largest magnitude; NaN and inf where it has them."""

    def check(a: torch.Tensor, b: torch.Tensor) -> Tuple[bool, str]:
        if isinstance(a, tuple):
            a, b = a[-1], b[-1]
        same_specials = all(torch.equal(f(a), f(b)) for f in (torch.isnan, torch.isposinf, torch.isneginf))
        finite = a.isfinite() & b.isfinite()
        a, b = a[finite].double(), b[finite].double()
        scale = b.abs().max().item() if b.numel() and b.abs().max() > 0 else 1.0
        diff = (a - b).abs().max().item() / scale if b.numel() else 0.0
        detail = f"max |diff| / max |ref| {diff:.1e} (tol {tol:.0e})"
        return diff <= tol and same_specials, detail + ("" if same_specials else "; NaN / inf differ")

    return check


def blur_comparison(b: int, size: int) -> Comparison:
    """Anomaly-map blur, sigma 4, 33 taps, reflect borders, (b, 1, size, size) float32."""
    x = torch.rand(b, 1, size, size, device="cuda")
    taps = gaussian_kernel1d(33, 4.0).cuda()
    pad = (16, 16, 16, 16)
    kernel2d = torch.outer(taps, taps)[None, None]

    def conv2d():  # kornia's / anomalib's GaussianBlur2d
        return F.conv2d(F.pad(x, pad, mode="reflect"), kernel2d)

    def two_conv1d():
        padded = F.pad(x, pad, mode="reflect")
        return F.conv2d(F.conv2d(padded, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))

    def native():
        return ops.separable_blur2d(x, taps, taps, "reflect", "same")

    # The tiled kernel at other tile heights than the one it picks from the grid size.
    tiles = {f"native_tile{rows}": _with_environment(native, "ANOMALY_KERNELS_BLUR_TILE_ROWS", str(rows)) for rows in (16, 32, 64, 128)}
    return Comparison(
        "gaussian_blur", f"{b}x1x{size}x{size}",
        {
            "native": native,
            "cudnn_conv2d": conv2d,
            "cudnn_conv2d_benchmark": _with_flags(conv2d, cudnn_benchmark=True),
            "two_cudnn_conv1d": two_conv1d,
            **tiles,
        },
        floor_bytes=2 * x.numel() * 4,
        check=_relative_check(1e-5),
        floor_flops=2 * 66 * x.numel(),
        target_ms={(1, 224): 0.006, (32, 224): 0.012, (32, 256): 0.015, (128, 256): 0.040}.get((b, size)),
        graph_forms=("native", "cudnn_conv2d"),
        route_forms=tuple(tiles),
    )


def upsample_blur_comparison(b: int, low: int, high: int) -> Comparison:
    """PatchCore / PaDiM anomaly map: (b, 1, low, low) -> bilinear (high, high) -> blur."""
    maps = torch.rand(b, 1, low, low, device="cuda")
    taps = gaussian_kernel1d(33, 4.0).cuda()
    kernel2d = torch.outer(taps, taps)[None, None]

    def interpolate_conv2d():
        up = F.interpolate(maps, size=(high, high), mode="bilinear", align_corners=False)
        return F.conv2d(F.pad(up, (16, 16, 16, 16), mode="reflect"), kernel2d)

    def interpolate_native_blur():
        up = F.interpolate(maps, size=(high, high), mode="bilinear", align_corners=False)
        return ops.separable_blur2d(up, taps, taps, "reflect", "same")

    return Comparison(
        "upsample_blur", f"{b}x1x{low}x{low}->{high}x{high}",
        {
            "native": lambda: upsample_blur2d(maps, (high, high)),
            "interpolate_cudnn_conv2d": interpolate_conv2d,
            "interpolate_native_blur": interpolate_native_blur,
        },
        floor_bytes=(maps.numel() + b * high * high) * 4,
        check=_relative_check(1e-5),
        target_ms=0.012 if (b, low, high) == (32, 28, 224) else None,
        graph_forms=("native", "interpolate_native_blur"),
    )


def sparse_projection_comparison(n: int, dim: int) -> Comparison:
    """SparseRandomProjection(eps=0.9).transform of (n, dim) float32, as KCenterGreedy's first step."""
    x = torch.randn(n, dim, device="cuda")
    projection = SparseRandomProjection(eps=0.9, random_state=0).fit(x)
    dense_t = projection.sparse_random_matrix.to("cuda").T.contiguous()
    k = dense_t.shape[1]

    def native():
        return projection.transform(x)

    # Rows staged in other slab widths than the one the kernel picks from the shared memory (384
    # at 1536 columns, the pattern in shared memory): 256 (more, shorter steps), 512 (the pattern
    # read from L2 at every tile) and 768 (the outputs in two chunks).
    slabs = {f"native_slab{w}": _with_environment(native, "ANOMALY_KERNELS_PROJECTION_SLAB", str(w)) for w in (256, 512, 768)}
    return Comparison(
        "sparse_projection", f"{n}x{dim}->{k}",
        {
            "native": native,
            "dense_gemm_fp32": lambda: x @ dense_t,
            "dense_gemm_tf32": _with_flags(lambda: x @ dense_t, tf32=True),
            **slabs,
        },
        floor_bytes=(n * dim + n * k) * 4,
        check=_relative_check(1e-5),
        target_ms=0.8 if (n, dim) == (219_520, 1536) else None,
        route_forms=tuple(slabs),
    )


def _random_precision(p: int, c: int, generator: torch.Generator) -> torch.Tensor:
    """(p, c, c) symmetric positive-definite float32 matrices, built in chunks of positions."""
    out = torch.empty(p, c, c, device="cuda")
    for first in range(0, p, 512):
        a = torch.randn(min(512, p - first), c, c, device="cuda", generator=generator) / c**0.5
        out[first : first + a.shape[0]] = a @ a.transpose(1, 2) + 0.1 * torch.eye(c, device="cuda")
    return out


def mahalanobis_comparison(b: int, c: int, h: int, w: int) -> Comparison:
    """PaDiM scoring of (b, c, h, w) float32 features against a fitted Gaussian per position."""
    g = torch.Generator(device="cuda").manual_seed(0)
    p = h * w
    embedding = torch.randn(b, c, h, w, device="cuda", generator=g)
    mean = torch.randn(c, p, device="cuda", generator=g) * 0.1
    with _flags():
        precision = _random_precision(p, c, g)

    def batched_matmul():  # what anomalib's scoring does, batched over positions
        d = embedding.reshape(b, c, p).permute(2, 0, 1) - mean.T[:, None, :]
        q = (torch.bmm(d, precision) * d).sum(-1)
        return q.clamp(min=0).sqrt().T.reshape(b, 1, h, w)

    packed = pack_upper_triangle(precision)
    kernel = torch.ops.anomaly_kernels.mahalanobis  # the native kernel whatever ops.mahalanobis routes to
    forms = {
        "native": lambda: ops.mahalanobis(embedding, mean, precision),
        "batched_matmul": batched_matmul,
        "native_kernel": lambda: kernel(embedding, mean, precision),
        "native_kernel_packed": lambda: kernel(embedding, mean, packed),
        "native_packed": lambda: ops.mahalanobis(embedding, mean, packed),
    }
    if b <= 32:  # groups of up to 32 images stream the rows into registers; the tiled kernel for comparison
        forms["native_kernel_tiled"] = _with_environment(
            lambda: kernel(embedding, mean, precision), "ANOMALY_KERNELS_MAHALANOBIS_STREAM", "0"
        )
        forms["native_kernel_packed_tiled"] = _with_environment(
            lambda: kernel(embedding, mean, packed), "ANOMALY_KERNELS_MAHALANOBIS_STREAM", "0"
        )
    # The kernel with other image groups than its default (the smallest that holds the batch):
    # smaller groups read the precisions more often but hold fewer registers per thread.
    for group in (4, 8, 16, 32, 64):
        if b >= 4 and group <= 2 * b:
            forms[f"native_kernel_group{group}"] = _with_environment(
                lambda: kernel(embedding, mean, precision), "ANOMALY_KERNELS_MAHALANOBIS_GROUP", str(group)
            )
    targets = {(32, 550, 64): 1.2, (8, 550, 64): 0.8, (1, 550, 64): 0.7, (32, 100, 56): 0.08}
    return Comparison(
        "mahalanobis", f"{b}x{c}x{h}x{w}",
        forms,
        floor_bytes=(p * c * (c + 1) // 2 + b * c * p + c * p + b * p) * 4,
        check=_relative_check(1e-4),
        floor_flops=float(p) * b * c * (c + 1),
        target_ms=targets.get((b, c, h)),
        graph_forms=("native_kernel",),
        # The kernel itself where native routes to batched matmul (32 x 550), the tiled kernel
        # where native streams, and the other image groups.
        route_forms=tuple(name for name in forms if name.startswith("native_kernel") and "packed" not in name),
    )


def gaussian_fit_comparison(b: int, c: int, h: int, w: int) -> Comparison:
    """PaDiM fit: mean and inverse covariance (ridge 0.01) at every position of (b, c, h, w)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    p = h * w
    embedding = torch.randn(b, c, h, w, device="cuda", generator=g)
    eye = torch.eye(c, device="cuda")

    def per_position_loop():  # anomalib's MultiVariateGaussian.fit
        x = embedding.reshape(b, c, p)
        covariance = torch.zeros(c, c, p, device="cuda")
        for i in range(p):
            covariance[:, :, i] = torch.cov(x[:, :, i].T) + 0.01 * eye
        return x.mean(0), torch.linalg.inv(covariance.permute(2, 0, 1))

    def batched():  # the same with one batched product and one batched inverse
        x = embedding.reshape(b, c, p).permute(2, 1, 0)  # (P, C, B)
        mean = x.mean(-1)
        centred = x - mean[..., None]
        covariance = centred @ centred.transpose(1, 2) / (b - 1) + 0.01 * eye
        return mean.T, torch.linalg.inv(covariance)

    targets = {(32, 550, 64): 100.0, (32, 100, 56): 10.0}
    return Comparison(
        "gaussian_fit", f"{b}x{c}x{h}x{w}",
        {"native": lambda: ops.gaussian_fit(embedding, 0.01), "batched_inverse": batched, "per_position_loop": per_position_loop},
        floor_bytes=(embedding.numel() + p * c * c + c * p) * 4,
        check=_relative_check(1e-3),
        floor_flops=float(p) * b * c * c,
        target_ms=targets.get((b, c, h)),
        rounds=2,
    )


def kcenter_comparison(n: int, dim: int, ratio: float, data: str) -> Comparison:
    """KCenterGreedy coreset selection (projection included) with float32 and bfloat16 rows."""
    if data == "clustered":
        embedding = clustered_embedding(n, dim).to("cuda")
    else:
        embedding = torch.randn(n, dim, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))

    def select(dtype: torch.dtype) -> Callable[[], object]:
        def run():
            # Seeded: both row types are selected on the same projection from the same start.
            sampler = KCenterGreedy(embedding, ratio, progress=False, feature_dtype=dtype, seed=0)
            return sampler.select_coreset_idxs(), sampler

        return run

    def coverage_check(a, b) -> Tuple[bool, str]:
        # Both selections measured on the float32 rows the float32 selection ran on (projecting
        # again would draw another projection; the bfloat16 rows would add their own rounding).
        (float32_idxs, float32_sampler), (bfloat16_idxs, _) = a, b
        radii = [coverage_radius(float32_sampler.features, idxs) for idxs in (float32_idxs, bfloat16_idxs)]
        rel = abs(radii[0] - radii[1]) / max(radii[0], 1e-30)
        return rel <= 1e-3 if data == "iid" else True, f"coverage radius float32 {radii[0]:.4g}, bfloat16 {radii[1]:.4g} (rel {rel:.1e})"

    forms = {"native": select(torch.float32), "native_bfloat16": select(torch.bfloat16)}
    if data == "clustered":
        # Every pruned pass in the exact form (two grid barriers), for the bounded form's gain.
        forms["native_exact_passes"] = _with_environment(select(torch.float32), "ANOMALY_KERNELS_KCENTER_TRIANGLE_BYTES", "0")
    if n * dim <= 400_000_000:
        # Half the cooperative grid: cheaper grid barriers, fewer loads in flight.
        forms["native_one_block_per_sm"] = _with_environment(select(torch.float32), "ANOMALY_KERNELS_KCENTER_BLOCKS_PER_SM", "1")
    picks = int(n * ratio)
    d_proj = min(dim, johnson_lindenstrauss_min_dim(n, 0.9))
    targets = {(219_520, "iid"): 1500.0, (219_520, "clustered"): 200.0}
    return Comparison(
        "kcenter_greedy", f"{n}x{dim} {data} ratio {ratio} (d={d_proj})",
        forms,
        floor_bytes=n * dim * 4 + picks * n * (d_proj * 4 + 4),
        check=coverage_check if n * dim <= 400_000_000 else None,
        target_ms=targets.get((n, data)),
        rounds=1,
        route_forms=tuple(name for name in forms if name not in ("native", "native_bfloat16")),
    )


def all_comparisons(quick: bool = False) -> List[Tuple[str, Callable[[], Comparison]]]:
    """(operation name, factory) pairs; inputs are made only when a comparison runs."""
    plan: List[Tuple[str, Callable[[], Comparison]]] = []
    for b, size in ((1, 224), (32, 224), (32, 256), (32, 320), (128, 256)):
        plan.append(("gaussian_blur", lambda b=b, size=size: blur_comparison(b, size)))
    plan.append(("upsample_blur", lambda: upsample_blur_comparison(32, 28, 224)))
    plan.append(("upsample_blur", lambda: upsample_blur_comparison(32, 64, 256)))
    for b, c, side in ((1, 550, 64), (8, 550, 64), (32, 550, 64), (1, 100, 56), (8, 100, 56), (32, 100, 56)):
        plan.append(("mahalanobis", lambda b=b, c=c, side=side: mahalanobis_comparison(b, c, side, side)))
    plan.append(("sparse_projection", lambda: sparse_projection_comparison(219_520, 1536)))
    if quick:
        return plan
    plan.append(("gaussian_fit", lambda: gaussian_fit_comparison(32, 100, 56, 56)))
    plan.append(("gaussian_fit", lambda: gaussian_fit_comparison(32, 550, 64, 64)))
    plan.append(("kcenter_greedy", lambda: kcenter_comparison(219_520, 1536, 0.1, "iid")))
    plan.append(("kcenter_greedy", lambda: kcenter_comparison(219_520, 1536, 0.1, "clustered")))
    plan.append(("kcenter_greedy", lambda: kcenter_comparison(1_000_000, 1536, 0.01, "iid")))
    return plan


def _measure(comparison: Comparison, bandwidth_gbs: float, fp32_flops: float) -> dict:
    floor_s = max(comparison.floor_bytes / (bandwidth_gbs * 1e9), comparison.floor_flops / fp32_flops)
    row = {"name": comparison.name, "size": comparison.size, "floor_ms": floor_s * 1e3,
           "target_ms": comparison.target_ms, "forms": {}}
    with _flags():
        outputs = [comparison.forms[name]() for name in list(comparison.forms)[:2]]
        if comparison.check is not None and len(outputs) == 2:
            row["agree"], row["check"] = comparison.check(*outputs)
        del outputs
        for name, fn in comparison.forms.items():
            try:
                t = cuda_event_time(fn, rounds=comparison.rounds)
            except torch.OutOfMemoryError as error:  # a plain form too large for this GPU
                row["forms"][name] = {"error": str(error).splitlines()[0]}
                continue
            finally:
                torch.cuda.empty_cache()
            row["forms"][name] = {"min_ms": t.min_s * 1e3, "median_ms": t.median_s * 1e3,
                                  "floor_share": floor_s / t.min_s}
        for name in comparison.graph_forms:  # last: a failed capture must not disturb the other forms
            try:
                t = cuda_graph_time(comparison.forms[name])
                row["forms"][f"{name}_in_cuda_graph"] = {
                    "min_ms": t.min_s * 1e3, "median_ms": t.median_s * 1e3, "floor_share": floor_s / t.min_s}
            except Exception as error:  # e.g. an operation that may not be captured
                row["forms"][f"{name}_in_cuda_graph"] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
                with contextlib.suppress(Exception):  # a sticky device error surfaces in the next comparison
                    torch.cuda.synchronize()
    native = row["forms"]["native"].get("min_ms")
    # Native variants (e.g. bfloat16 rows) are not alternatives the native form must beat, nor
    # are graph replays, which leave out the host time that the native figure includes.
    others = [
        f["min_ms"] for k, f in row["forms"].items()
        if not k.startswith("native") and not k.endswith("_in_cuda_graph") and "min_ms" in f
    ]
    row["native_fastest"] = native is not None and all(native <= o for o in others)
    row["target_met"] = None if comparison.target_ms is None or native is None else native <= comparison.target_ms
    row["faster_route"] = faster_route(row["forms"], comparison.route_forms)
    return row


def _format(rows: List[dict]) -> str:
    lines = []
    for r in rows:
        forms = "  ".join(
            f"{k} {f['min_ms']:.4g}" if "min_ms" in f else f"{k} ({f['error'][:40]})" for k, f in r["forms"].items()
        )
        target = "" if r["target_ms"] is None else f" target {r['target_ms']:.4g} {'MET' if r['target_met'] else 'MISSED'}"
        agree = "" if "agree" not in r else (" agree" if r["agree"] else f" MISMATCH ({r['check']})")
        route = f" ROUTE {r['faster_route']}" if r.get("faster_route") else ""
        lines.append(f"{r['name']:<17} {r['size']:<34} floor {r['floor_ms']:.4g} ms | {forms}{target}"
                     f"{'' if r['native_fastest'] else ' NOT-FASTEST'}{route}{agree}")
    return "\n".join(lines)


def _write_json(record: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)


def run_gpu_comparison(output: Optional[str] = None, quick: bool = False, only: Optional[List[str]] = None) -> dict:
    """Run the comparisons (``only``: these operation names) on the current CUDA device.

    Prints one line per comparison as it finishes and writes the JSON record to ``output``.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("the GPU comparison needs a CUDA device; none is visible")
    record = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "timing": "CUDA events over back-to-back calls; min over rounds; TF32 off unless a form says tf32",
    }
    record["copy_bandwidth_gbs"] = bandwidth = memory_bandwidth_gbs("cuda", megabytes=1024)
    record["fp32_tflops"] = flops = cuda_fp32_flops() / 1e12
    print(f"{record['machine'].get('gpu')}: copy {bandwidth:.0f} GB/s, FP32 matmul {flops:.1f} TFLOP/s", flush=True)
    record["results"] = rows = []
    for name, factory in all_comparisons(quick):
        if only and name not in only:
            continue
        try:
            comparison = factory()
            rows.append(_measure(comparison, bandwidth, flops * 1e12))
            del comparison
        except Exception as error:  # one broken comparison must not hide the others' results
            print(f"{name}: FAILED {type(error).__name__}: {error}", flush=True)
            record.setdefault("failures", []).append(f"{name}: {type(error).__name__}: {error}")
            torch.cuda.empty_cache()
            continue
        print(_format(rows[-1:]), flush=True)
        torch.cuda.empty_cache()
        if output:  # after every comparison, so an interrupted run keeps what it measured
            _write_json(record, output)
    if output:
        print(f"wrote {output}")
    missed = [r for r in rows if r["target_met"] is False or not r["native_fastest"] or r.get("agree") is False]
    print(f"{len(rows) - len(missed)} of {len(rows)} comparisons: native agrees, is fastest and meets its target",
          file=sys.stderr)
    for r in rows:
        if r.get("faster_route"):
            print(f"{r['name']} {r['size']}: {r['faster_route']} is faster than the default route", file=sys.stderr)
    return record
