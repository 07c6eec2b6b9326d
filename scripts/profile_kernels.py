"""One call of each CUDA kernel at the sizes the GPU targets name, for Nsight Compute.

Run under ``ncu --profile-from-start off ...`` (scripts/gpu-check.sh does): every case is called
once to warm up (module load, allocator, cached bands and device limits), then the profiled
region (cudaProfilerStart / Stop) holds exactly one call of each, so the report has one row per
kernel launch and no warm-up noise. ``--device cpu --small`` runs the same calls on the CPU
kernels at small sizes (a check that the script itself works).
"""

from __future__ import annotations

import argparse
from typing import Callable, List, Tuple

import torch

from anomaly_kernels import ops
from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.filters import gaussian_kernel1d, upsample_blur2d
from anomaly_kernels.packed_precision import pack_upper_triangle


def cases(device: str, small: bool) -> List[Tuple[str, Callable[[], object]]]:
    """(label, call) pairs; the inputs are made here, outside the profiled region."""
    g = torch.Generator(device=device).manual_seed(0)
    side, maps_n, channels, positions = (32, 2, 40, 16) if small else (224, 32, 550, 64 * 64)
    rows = 2_000 if small else 219_520
    out: List[Tuple[str, Callable[[], object]]] = []

    maps = torch.rand(maps_n, 1, side, side, device=device, generator=g)
    taps = gaussian_kernel1d(33, 4.0).to(device)
    out.append((f"blur {maps_n}x1x{side}x{side}", lambda: ops.separable_blur2d(maps, taps, taps, "reflect", "same")))
    coarse = torch.rand(maps_n, 1, side // 8, side // 8, device=device, generator=g)
    out.append((f"upsample+blur {maps_n}x1x{side // 8} -> {side}", lambda: upsample_blur2d(coarse, (side, side))))

    kernel = torch.ops.anomaly_kernels.mahalanobis
    mean = torch.randn(channels, positions, device=device, generator=g) * 0.1
    precision = torch.eye(channels, device=device).expand(positions, channels, channels).contiguous()
    packed = pack_upper_triangle(precision)
    for b in (1, 8, 32):
        embedding = torch.randn(b, channels, positions, 1, device=device, generator=g)
        out.append((f"mahalanobis kernel {b}x{channels}, {positions} positions",
                    lambda e=embedding: kernel(e, mean, precision)))
    embedding = torch.randn(32, channels, positions, 1, device=device, generator=g)
    out.append((f"mahalanobis kernel packed 32x{channels}", lambda: kernel(embedding, mean, packed)))

    x = torch.randn(rows, 1536, device=device, generator=g)
    projection = SparseRandomProjection(eps=0.9, random_state=0).fit(x)
    out.append((f"sparse projection {rows}x1536", lambda: projection.transform(x)))

    features = torch.randn(rows, 304, device=device, generator=g)
    distances = torch.full((rows,), float("inf"), device=device)
    out.append((f"kcenter_step_ {rows}x304", lambda: ops.kcenter_step_(features, distances, 0)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--small", action="store_true", help="small sizes (a check of the script)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    plan = cases(args.device, args.small)
    for _, call in plan:  # warm-up, not profiled
        call()
    profiling = args.device == "cuda"
    if profiling:
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
    for label, call in plan:
        print(f"profiled: {label}", flush=True)
        call()
    if profiling:
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    print(f"{len(plan)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
