"""The benchmark cases: each pairs a native call with its reference on the same inputs.

Sizes follow the typical workloads of the models (PatchCore memory banks of 160k-310k rows of
~300 projected features; 224-320 px anomaly maps blurred with sigma 4 / 33 taps). ``full``
selects anomalib-scale sizes; the default preset finishes in about a minute on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import torch

from anomaly_kernels import ops, reference


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


def kcenter_step_case(device: str, n: int, d: int) -> Case:
    """One fused distance + running-min + argmax pass over (n, d) float32 features."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(n, d, generator=g).to(device)
    start = torch.full((n,), float("inf"), device=device)
    ops.kcenter_step_(features, start, 1)  # realistic running minima
    native_dist, ref_dist = start.clone(), start.clone()
    center = torch.tensor(n // 2, device=device)

    def native():
        native_dist.copy_(start)
        return ops.kcenter_step_(features, native_dist, center), native_dist

    def ref():
        ref_dist.copy_(start)
        return reference.kcenter_step_(features, ref_dist, center), ref_dist

    def check(a, b):
        same_index = int(a[0]) == int(b[0])
        diff = (a[1] - b[1]).abs().max().item()
        return same_index and diff <= 1e-4, f"argmax {'equal' if same_index else 'differs'}, max |diff| {diff:.1e}"

    return Case("kcenter_step", device, f"{n}x{d} f32", native, ref, n * d * 4 + 2 * n * 4, check)


def kcenter_greedy_case(device: str, n: int, dim: int, ratio: float) -> Case:
    """Whole coreset selection (projection + greedy loop) of an (n, dim) embedding."""
    from anomaly_kernels.components.dimensionality_reduction.random_projection import johnson_lindenstrauss_min_dim
    from anomaly_kernels.components.sampling import KCenterGreedy

    g = torch.Generator().manual_seed(0)
    embedding = torch.randn(n, dim, generator=g).to(device)

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

    def coverage_radius(features, idxs):
        centers = features[idxs]
        radius = torch.zeros((), device=features.device)
        for chunk in features.split(8192):
            radius = torch.maximum(radius, torch.cdist(chunk, centers, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1).max())
        return radius.item()

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
        "kcenter_greedy", device, f"{n}x{dim} ratio {ratio}", native, ref, bytes_moved, check, repeats=2
    )


def gaussian_blur_case(device: str, batch: int, side: int, sigma: float = 4.0) -> Case:
    """Anomaly-map smoothing: (batch, 1, side, side), 2*int(4 sigma + 0.5) + 1 taps."""
    from anomaly_kernels.components.filters import GaussianBlur2d

    taps = 2 * int(4 * sigma + 0.5) + 1
    blur = GaussianBlur2d(kernel_size=taps, sigma=sigma, channels=1).to(device)
    maps = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0)).to(device)

    def native():
        return blur(maps)

    def ref():
        return reference.separable_blur2d(maps, blur.kernel_y, blur.kernel_x, "reflect", "same")

    size = f"{batch}x1x{side}x{side} k{taps}"
    return Case("gaussian_blur", device, size, native, ref, 2 * maps.numel() * 4, _max_abs_diff_check(1e-5))


def opencv_blur_case(batch: int, side: int, sigma: float = 4.0) -> List[Case]:
    """The same blur with OpenCV as the reference, when OpenCV is importable (CPU only)."""
    try:
        import cv2
    except ImportError:
        return []
    import numpy as np

    from anomaly_kernels.components.filters import GaussianBlur2d

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
    if full or cuda:
        step = (310_000, 304)
        greedy = (219_520, 1536, 0.1) if cuda else (100_000, 1536, 0.01)
        blurs = [(32, 224), (32, 320)]
    else:
        step = (100_000, 304)
        greedy = (20_000, 1536, 0.01)
        blurs = [(32, 224)]
    factories = [lambda: [kcenter_step_case(device, *step)], lambda: [kcenter_greedy_case(device, *greedy)]]
    for batch, side in blurs:
        factories.append(lambda b=batch, s=side: [gaussian_blur_case(device, b, s)])
        if not cuda:
            factories.append(lambda b=batch, s=side: opencv_blur_case(b, s))
    return factories
