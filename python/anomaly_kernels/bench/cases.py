"""The benchmark cases: each pairs a native call with its reference on the same inputs.

Sizes follow the typical workloads of the models (PatchCore memory banks of 160k-310k rows of
~300 projected features; 224-320 px anomaly maps blurred with sigma 4 / 33 taps). ``full``
selects anomalib-scale sizes; the default preset finishes in about a minute on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_kernels import ops, reference
from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.dimensionality_reduction.random_projection import johnson_lindenstrauss_min_dim
from anomaly_kernels.components.filters import GaussianBlur2d, upsample_blur2d
from anomaly_kernels.components.sampling import KCenterGreedy


@dataclass
class Case:
    """One measurement: ``native()`` and ``reference()`` compute the same thing.

    ``bytes_moved`` is the least memory traffic of one native call (what a kernel that reads
    each input once and writes each output once moves); throughput is reported against it.
    ``check(native_out, reference_out)`` returns (agree, detail).
    """

    name: str
    device: str
    size: str
    native: Callable[[], object]
    reference: Callable[[], object]
    bytes_moved: int
    check: Callable[[object, object], Tuple[bool, str]]
    repeats: int = 5
    params: dict = field(default_factory=dict)


def _max_abs_diff_check(tol: float) -> Callable[[torch.Tensor, torch.Tensor], Tuple[bool, str]]:
    def check(a: torch.Tensor, b: torch.Tensor) -> Tuple[bool, str]:
        diff = (a - b).abs().max().item() if a.numel() else 0.0
        return diff <= tol, f"max |diff| {diff:.2e} (tol {tol:.0e})"

    return check


def kcenter_step_case(device: str, n: int, d: int, to_row: bool = False) -> Case:
    """One fused distance + running-min + argmax pass over (n, d) float32 features.

    ``to_row``: the center is given as a (d,) vector (``kcenter_step_to_``, as the sharded
    selection calls it) instead of a row index (``kcenter_step_``).
    """
    g = torch.Generator().manual_seed(0)
    features = torch.randn(n, d, generator=g).to(device)
    start = torch.full((n,), float("inf"), device=device)
    ops.kcenter_step_(features, start, 1)  # realistic running minima
    native_dist, ref_dist = start.clone(), start.clone()
    if to_row:
        center = features[n // 2].clone()
        native_step, reference_step = ops.kcenter_step_to_, reference.kcenter_step_to_
    else:
        center = torch.tensor(n // 2, device=device)
        native_step, reference_step = ops.kcenter_step_, reference.kcenter_step_

    def native():
        native_dist.copy_(start)
        return native_step(features, native_dist, center), native_dist

    def ref():
        ref_dist.copy_(start)
        return reference_step(features, ref_dist, center), ref_dist

    def check(a, b):
        same_index = int(a[0]) == int(b[0])
        diff = (a[1] - b[1]).abs().max().item()
        return same_index and diff <= 1e-4, f"argmax {'equal' if same_index else 'differs'}, max |diff| {diff:.1e}"

    name = "kcenter_step_to" if to_row else "kcenter_step"
    return Case(name, device, f"{n}x{d} f32", native, ref, n * d * 4 + 2 * n * 4, check)


def clustered_embedding(n: int, dim: int, clusters: int = 300, directions: int = 16, seed: int = 0) -> torch.Tensor:
    """Feature-like rows: a mixture of tight clusters, each spanning a few random directions.

    Patch features of similar images concentrate like this (low intrinsic dimension around many
    modes), unlike iid Gaussian rows, which are the worst case for pruning.
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=g) * 4.0
    labels = torch.randint(clusters, (n,), generator=g)
    bases = torch.randn(clusters, directions, dim, generator=g) / dim**0.5
    coefficients = torch.randn(n, directions, generator=g)
    out = torch.empty(n, dim)
    for first in range(0, n, 8192):
        rows = slice(first, min(first + 8192, n))
        out[rows] = centers[labels[rows]] + torch.einsum("nk,nkd->nd", coefficients[rows], bases[labels[rows]])
    return out


def coverage_radius(features: torch.Tensor, idxs) -> float:
    """Largest distance from a row of (N, d) ``features`` to its nearest row among ``idxs``."""
    centers = features[idxs]
    radius = torch.zeros((), device=features.device)
    for chunk in features.split(8192):
        radius = torch.maximum(radius, torch.cdist(chunk, centers, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1).max())
    return radius.item()


def kcenter_greedy_case(device: str, n: int, dim: int, ratio: float, data: str = "iid") -> Case:
    """Whole coreset selection (projection + greedy loop) of an (n, dim) embedding.

    ``data``: "iid" Gaussian rows (nothing can be pruned) or "clustered" feature-like rows.
    """

    if data == "clustered":
        embedding = clustered_embedding(n, dim).to(device)
    else:
        embedding = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)).to(device)

    def native():
        torch.manual_seed(0)
        sampler = KCenterGreedy(embedding, ratio, progress=False)
        idxs = sampler.select_coreset_idxs()
        return idxs, sampler.features

    def ref():
        # The plain algorithm on the same projection: eager distance, minimum and argmax.
        torch.manual_seed(0)
        sampler = KCenterGreedy(embedding, ratio, progress=False)
        features = sampler._prepare_features()
        start = int(torch.randint(n, (1,)).item())
        return reference.kcenter_greedy(features, sampler.coreset_size, start).tolist(), features

    def check(a, b):
        if a[0] == b[0]:
            return True, "identical indices"
        ra, rb = coverage_radius(a[1], a[0]), coverage_radius(b[1], b[0])
        rel = abs(ra - rb) / max(rb, 1e-30)
        return rel <= 1e-4, f"indices differ (near-ties); coverage radius rel. diff {rel:.1e}"

    k = int(n * ratio)
    d_proj = min(dim, johnson_lindenstrauss_min_dim(n, 0.9))
    bytes_moved = n * dim * 4 + k * (n * d_proj * 4 + 2 * n * 4)
    return Case(
        "kcenter_greedy", device, f"{n}x{dim} {data} ratio {ratio}", native, ref, bytes_moved, check, repeats=2
    )


def sparse_projection_case(device: str, n: int, dim: int) -> Case:
    """SparseRandomProjection.transform (eps 0.9, as KCenterGreedy uses) vs the dense product."""

    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)).to(device)
    projection = SparseRandomProjection(eps=0.9, random_state=0).fit(x)
    dense = projection._dense_matrix(torch.float32, x.device)
    k = dense.shape[0]
    return Case(
        "sparse_projection", device, f"{n}x{dim} -> {k}", lambda: projection.transform(x), lambda: x @ dense.T,
        (n * dim + n * k) * 4, _max_abs_diff_check(1e-4),
    )


def _padim_embedding(device: str, b: int, c: int, side: int) -> torch.Tensor:
    return torch.randn(b, c, side, side, generator=torch.Generator().manual_seed(0)).to(device)


def gaussian_fit_case(device: str, b: int, c: int, side: int, baseline: str = "batched") -> Case:
    """PaDiM statistics: mean and inverse covariance at every position.

    ``baseline``: "batched" (the batched float64 reference) or "loop" (the original form: a
    Python loop over positions and one batched inverse).
    """
    embedding = _padim_embedding(device, b, c, side)
    p = side * side
    references = {"batched": reference.gaussian_fit, "loop": reference.gaussian_fit_per_position}

    def check(a, b_):
        diff = (a[1] - b_[1]).abs().max().item() / b_[1].abs().max().item()
        return diff <= 1e-4, f"precision max rel. diff {diff:.1e}"

    return Case(
        "gaussian_fit" if baseline == "batched" else "gaussian_fit_vs_loop", device, f"{b}x{c}x{side}x{side}",
        lambda: ops.gaussian_fit(embedding), lambda: references[baseline](embedding),
        (b * c * p + p * c * c + c * p) * 4, check, repeats=3,
    )


def mahalanobis_case(device: str, b: int, c: int, side: int) -> Case:
    """PaDiM scoring with fitted Gaussians; the precision dominates the bytes.

    ``bytes_moved`` counts the whole precision; the CPU kernel reads only its upper triangle
    (it is symmetric), so its share of the bandwidth can exceed 1.
    """
    p = side * side
    fit_batch = max(2 * c // 3, 8)
    mean, precision = ops.gaussian_fit(_padim_embedding(device, fit_batch, c, side))
    embedding = _padim_embedding(device, b, c, side)
    return Case(
        "mahalanobis", device, f"{b}x{c}x{side}x{side}", lambda: ops.mahalanobis(embedding, mean, precision),
        lambda: reference.mahalanobis(embedding, mean, precision), (b * c * p + p * c * c + c * p + b * p) * 4,
        _max_abs_diff_check(1e-3),
    )


def kde_case(device: str, n: int, d: int, m: int) -> Case:
    """GaussianKDE scoring core: m queries against n training rows in d dimensions."""
    g = torch.Generator().manual_seed(0)
    dataset = torch.randn(n, d, generator=g).to(device)
    queries = (torch.randn(m, d, generator=g) * 1.5).to(device)
    return Case(
        "kde_log_sum_exp", device, f"{n}x{d}, {m} queries", lambda: ops.kde_log_sum_exp(queries, dataset),
        lambda: reference.kde_log_sum_exp(queries, dataset), (n * d + m * d + m) * 4, _max_abs_diff_check(1e-3),
    )


def gaussian_blur_case(device: str, batch: int, side: int, sigma: float = 4.0, repeats: int = 5) -> Case:
    """Anomaly-map smoothing: (batch, 1, side, side), 2*int(4 sigma + 0.5) + 1 taps."""

    taps = 2 * int(4 * sigma + 0.5) + 1
    blur = GaussianBlur2d(kernel_size=taps, sigma=sigma, channels=1).to(device)
    maps = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0)).to(device)

    def native():
        return blur(maps)

    def ref():
        return reference.separable_blur2d(maps, blur.kernel_y, blur.kernel_x, "reflect", "same")

    size = f"{batch}x1x{side}x{side} k{taps}"
    return Case("gaussian_blur", device, size, native, ref, 2 * maps.numel() * 4, _max_abs_diff_check(1e-5), repeats=repeats)


def upsample_blur_case(device: str, batch: int, low: int, side: int, sigma: float = 4.0) -> Case:
    """Anomaly maps from a (low x low) patch grid: bilinear upsampling to side x side + blur."""


    taps = 2 * int(4 * sigma + 0.5) + 1
    blur = GaussianBlur2d(kernel_size=taps, sigma=sigma, channels=1).to(device)
    grid = torch.rand(batch, 1, low, low, generator=torch.Generator().manual_seed(0)).to(device)

    def ref():
        upsampled = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
        return reference.separable_blur2d(upsampled, blur.kernel_y, blur.kernel_x, "reflect", "same")

    return Case(
        "upsample_blur", device, f"{batch}x1x{low}x{low} -> {side}x{side} k{taps}",
        lambda: upsample_blur2d(grid, (side, side), kernel_size=taps, sigma=sigma), ref,
        (grid.numel() + batch * side * side) * 4, _max_abs_diff_check(1e-5),
    )


def opencv_blur_case(batch: int, side: int, sigma: float = 4.0) -> List[Case]:
    """The same blur with OpenCV as the reference, when OpenCV is importable (CPU only)."""
    try:
        import cv2
    except ImportError:
        return []


    taps = 2 * int(4 * sigma + 0.5) + 1
    blur = GaussianBlur2d(kernel_size=taps, sigma=sigma, channels=1)
    maps = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0))
    planes = maps.numpy()

    def ref():
        out = np.empty_like(planes)
        for i in range(batch):
            out[i, 0] = cv2.GaussianBlur(planes[i, 0], (taps, taps), sigma, borderType=cv2.BORDER_REFLECT_101)
        return torch.from_numpy(out)

    size = f"{batch}x1x{side}x{side} k{taps}"
    return [Case("gaussian_blur_vs_opencv", "cpu", size, lambda: blur(maps), ref, 2 * maps.numel() * 4,
                 _max_abs_diff_check(1e-4))]


def all_cases(device: str, full: bool) -> List[Callable[[], List[Case]]]:
    """Factories of the cases for one device (built lazily: inputs are allocated one at a time)."""
    cuda = device.startswith("cuda")
    big = full or cuda
    step = (310_000, 304) if big else (100_000, 304)
    if cuda:
        greedy = [(219_520, 1536, 0.1, "iid"), (219_520, 1536, 0.1, "clustered")]
    elif full:
        # Ratio 0.1 (PatchCore's default) on clustered rows: most passes come after the modes
        # are covered, where whole groups of rows are skipped.
        greedy = [(100_000, 1536, 0.01, "iid"), (100_000, 1536, 0.01, "clustered"), (50_000, 1536, 0.1, "clustered")]
    else:
        greedy = [(20_000, 1536, 0.01, "iid"), (20_000, 1536, 0.01, "clustered")]
    projection = (100_000, 1536) if big else (20_000, 1536)
    scoring = [(8, 100, 56), (32, 100, 56), (8, 100, 64), (32, 100, 64)] if big else [(8, 100, 56), (32, 100, 56)]
    if cuda:
        scoring += [(8, 550, 56), (32, 550, 56)]
    blurs = [(32, 224), (32, 320)] if big else [(32, 224)]

    factories = [lambda: [kcenter_step_case(device, *step)], lambda: [kcenter_step_case(device, *step, to_row=True)]]
    factories += [lambda g=g: [kcenter_greedy_case(device, *g)] for g in greedy]
    factories.append(lambda: [sparse_projection_case(device, *projection)])
    factories.append(lambda: [gaussian_fit_case(device, 32, 100, 56)])
    if big:
        factories.append(lambda: [gaussian_fit_case(device, 32, 100, 56, baseline="loop")])
        # More images than channels: the CPU kernel's (C, C) Cholesky route instead of the
        # (B, B) image-space one that 32 x 100 takes.
        factories.append(lambda: [gaussian_fit_case(device, 200, 100, 28)])
    factories += [lambda s=s: [mahalanobis_case(device, *s)] for s in scoring]
    factories.append(lambda: [kde_case(device, 40_000, 16, 1000)])
    factories.append(lambda: [upsample_blur_case(device, 32, 28, 224)])
    for batch, side in blurs:
        factories.append(lambda b=batch, s=side: [gaussian_blur_case(device, b, s)])
        if not cuda:
            factories.append(lambda b=batch, s=side: opencv_blur_case(b, s))
    # A map so small that the work is nothing: the per-call cost of the module (checks, dispatch,
    # allocation, launch), which bounds a per-image path on a GPU.
    # (On the CPU, 2000 single calls; a CUDA round already times many back-to-back calls.)
    factories.append(lambda: [gaussian_blur_case(device, 1, 8, sigma=0.25, repeats=5 if cuda else 2000)])
    return factories
