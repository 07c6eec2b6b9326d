"""The conformance table: one entry per native operator (``torch.ops.anomaly_kernels.*``).

An entry says how to call its operator (sample inputs over shapes, dtypes, strides and edge
sizes, in the schema's argument order), what it must equal (the plain algorithm of
:mod:`anomaly_kernels.reference`, run on the CPU), how close (tolerances per dtype), whether it
has a backward, and which benchmark case measures it. ``test_conformance.py`` runs every entry
through the same checks: parity on each device, ``torch.library.opcheck``,
``torch.compile(fullgraph=True)``, gradcheck and the benchmark case. A new operator gets an entry
here (the table test fails until it has one); what only one operator needs (its error messages,
its CUDA tiling edges, its numerical corner cases) stays in ``test_<operator>.py``.

The k-center operators run on integer-valued rows: every distance is then exact in float32,
bfloat16 and float64 whatever the summation order, so the selected rows, ties included (smallest
index), must equal the reference's exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from anomaly_kernels import reference
from anomaly_kernels.bench import cases

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16


@dataclass(frozen=True)
class Sample:
    """One call: ``args`` in the operator schema's order, ``label`` names the shape in failures."""

    label: str
    args: tuple


@dataclass(frozen=True)
class Entry:
    """How one operator is called, checked and measured.

    ``samples(device, dtype)`` returns the inputs of the parity test; ``samples(...)[0]`` is the
    small ordinary call that opcheck and torch.compile use. ``reference`` takes the operator's
    arguments. ``tolerances`` maps a dtype to (rtol, atol) for floating outputs and mutated
    arguments (integer ones must be equal). ``grad_samples(device)`` gives float64 calls for
    gradcheck, with ``grad_args`` the positions of the differentiable arguments; ``bench(device)``
    builds the operator's benchmark case at a test size.
    """

    name: str
    samples: Callable[[str, torch.dtype], List[Sample]]
    reference: Callable[..., object]
    dtypes: Tuple[torch.dtype, ...]
    tolerances: Dict[torch.dtype, Tuple[float, float]]
    bench: Callable[[str], cases.Case]
    cuda_dtypes: Optional[Tuple[torch.dtype, ...]] = None  # when the CUDA kernel takes fewer
    grad_args: Tuple[int, ...] = ()
    grad_samples: Optional[Callable[[str], List[Sample]]] = None
    opcheck_samples: int = 1  # how many of the first samples opcheck runs on (and every edge one)

    def dtypes_on(self, device: str) -> Tuple[torch.dtype, ...]:
        return self.cuda_dtypes if device == "cuda" and self.cuda_dtypes is not None else self.dtypes


def written_positions(name: str) -> list:
    """Argument positions the operator's schema marks as written (``Tensor(a!)``)."""
    arguments = getattr(torch.ops.anomaly_kernels, name).default._schema.arguments
    return [i for i, a in enumerate(arguments) if a.alias_info is not None and a.alias_info.is_write]


def clone_args(args: tuple, device=None) -> tuple:
    """Fresh copies of a call's tensor arguments (on ``device`` if given), other arguments as they are."""
    return tuple(a.detach().clone().to(device or a.device) if isinstance(a, torch.Tensor) else a for a in args)


def result_tensors(result) -> list:
    """An operator's result as a list of tensors (none, one, or a tuple's)."""
    if result is None:
        return []
    return [result] if isinstance(result, torch.Tensor) else list(result)


# --------------------------------------------------------------------------------------------
# input helpers (values drawn on the CPU from a seeded generator, so every device sees the same)
# --------------------------------------------------------------------------------------------
def _randn(shape, dtype, device, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * scale).to(dtype=dtype, device=device)


def _integers(shape, dtype, device, seed: int, bound: int = 100) -> torch.Tensor:
    """Integers in [-bound, bound]: exact in bfloat16 for bound <= 256."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-bound, bound + 1, shape, generator=g).to(dtype=dtype, device=device)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous view: every other element of the last dimension of a
    wider buffer, starting one element in (so the storage offset is not 0 either)."""
    buffer = t.new_empty((*t.shape[:-1], 2 * t.shape[-1] + 1))
    view = buffer[..., 1::2]
    view.copy_(t)
    return view


# --------------------------------------------------------------------------------------------
# banded_resample2d
# --------------------------------------------------------------------------------------------
def band(outputs, size, taps, seed, dtype, device):
    """``outputs`` random starts in ``[0, size - taps]`` (int64) and (outputs, taps) weights."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, size - taps + 1, (outputs,), generator=g)
    weights = torch.randn(outputs, taps, generator=g, dtype=F64)
    return start.to(device), weights.to(dtype=dtype, device=device)


def _banded_resample2d_samples(device, dtype):
    # (input shape, output (H, W), taps (Ly, Lx), strided input)
    shapes = [
        ((2, 3, 7, 9), (20, 13), (3, 5), False),
        ((1, 1, 1, 1), (1, 1), (1, 1), False),
        ((1, 2, 28, 28), (56, 40), (10, 9), False),
        ((2, 3, 7, 9), (20, 13), (3, 5), True),
        ((1, 1, 6, 5), (4, 7), (6, 5), False),  # bands as long as the input
        ((0, 2, 5, 4), (3, 2), (2, 2), False),  # no images
        ((2, 1, 5, 4), (0, 3), (2, 2), False),  # no output rows
    ]
    out = []
    for i, (shape, (h, w), (ly, lx), use_strides) in enumerate(shapes):
        x = _randn(shape, dtype, device, seed=i)
        x = strided(x) if use_strides else x
        start_y, weights_y = band(h, shape[2], ly, 10 + i, dtype, device)
        start_x, weights_x = band(w, shape[3], lx, 20 + i, dtype, device)
        label = f"{tuple(shape)}->{h}x{w} taps {ly}x{lx}{' strided' if use_strides else ''}"
        out.append(Sample(label, (x, start_y, weights_y, start_x, weights_x)))
    return out


# --------------------------------------------------------------------------------------------
# gaussian_fit
# --------------------------------------------------------------------------------------------
def _gaussian_fit_samples(device, dtype):
    # (B, C, H, W): B <= C takes the (B, B) image-space route, B > C the (C, C) one.
    shapes = [(5, 3, 2, 4), (3, 4, 2, 3), (2, 1, 1, 1), (32, 40, 2, 3), (6, 5, 4, 3), (3, 4, 0, 2)]
    out = []
    for i, shape in enumerate(shapes):
        embedding = _randn(shape, dtype, device, seed=30 + i, scale=2.0) + 1.0
        if i == 4:
            embedding = embedding.transpose(2, 3)  # (6, 5, 3, 4) with swapped strides
        out.append(Sample(f"{tuple(embedding.shape)}{' strided' if i == 4 else ''}", (embedding, 0.01)))
    # Packed precisions, on both routes.
    for i, shape in enumerate([(5, 3, 2, 4), (32, 40, 2, 3)]):
        embedding = _randn(shape, dtype, device, seed=36 + i, scale=2.0) + 1.0
        out.append(Sample(f"{shape} packed", (embedding, 0.01, True)))
    return out


# --------------------------------------------------------------------------------------------
# k-center operators
# --------------------------------------------------------------------------------------------
def _kcenter_rows(n, d, dtype, device, seed, use_strides=False, bound=100):
    features = _integers((n, d), dtype, device, seed, bound)
    return strided(features) if use_strides else features


def _kcenter_step_samples(device, dtype, to_row: bool):
    # (n, d, strided features, value bound): bound 1 puts many rows at the largest distance,
    # where the smallest index must win.
    shapes = [(37, 11, False, 100), (1, 1, False, 100), (1, 7, False, 100), (2, 3, False, 100), (33, 1, False, 100),
              (257, 31, False, 100), (1000, 300, False, 100), (150, 14, True, 100), (50, 2, False, 1)]
    out = []
    for i, (n, d, use_strides, bound) in enumerate(shapes):
        features = _kcenter_rows(n, d, dtype, device, seed=40 + i, use_strides=use_strides, bound=bound)
        g = torch.Generator().manual_seed(50 + i)
        # Running minima from earlier centers: some rows are already closer than the new one
        # (or none, +inf, for the rows with ties).
        min_distances = (torch.rand(n, generator=g, dtype=F64) * 100 * d**0.5).to(dtype=dtype, device=device)
        if bound == 1:
            min_distances.fill_(float("inf"))
        if to_row:
            center = _integers((d,), dtype, device, seed=60 + i, bound=bound)
        else:
            center = torch.tensor(int(torch.randint(n, (1,), generator=g)), device=device)
        label = f"{n}x{d}{' strided' if use_strides else ''}{' ties' if bound == 1 else ''}"
        out.append(Sample(label, (features, min_distances, center)))
    return out


def _kcenter_greedy_samples(device, dtype):
    # (n, d, passes begin..end of k centers, pick, prune, strided features)
    runs = [
        (64, 6, 0, 4, 5, True, True, False),
        (1, 1, 0, 1, 1, False, True, False),  # one row, one apply-only pass
        (700, 9, 0, 59, 60, True, True, False),
        (700, 9, 0, 59, 60, True, False, False),
        (2000, 33, 5, 30, 40, True, True, False),  # resumed after 5 passes
        (500, 12, 3, 3, 10, True, True, False),  # no pass at all
        (300, 20, 0, 10, 10, False, True, False),  # apply given centers only
        (400, 16, 0, 20, 25, True, True, True),
        (200, 3, 0, 29, 30, True, True, False),  # values in {-1, 0, 1}: ties at every pass
    ]
    out = []
    for i, (n, d, begin, end, k, pick, prune, use_strides) in enumerate(runs):
        features = _kcenter_rows(n, d, dtype, device, seed=70 + i, use_strides=use_strides, bound=1 if d == 3 else 100)
        min_distances = torch.full((n,), float("inf"), device=device)
        nearest = torch.full((n,), -1, dtype=torch.int32, device=device)
        g = torch.Generator().manual_seed(80 + i)
        centers = torch.randint(n, (k,), generator=g).to(device)  # pick=False uses all of them
        # Passes before `begin` come from the reference, as an earlier call would have left them.
        reference.kcenter_greedy_(features, min_distances, nearest, centers, 0, begin, True, prune)
        label = f"{n}x{d} passes {begin}..{end} of {k}{' pick' if pick else ''}{' prune' if prune else ''}"
        label += " strided" if use_strides else ""
        out.append(Sample(label, (features, min_distances, nearest, centers, begin, end, pick, prune)))
    return out


# --------------------------------------------------------------------------------------------
# kde_log_sum_exp
# --------------------------------------------------------------------------------------------
def _kde_log_sum_exp_samples(device, dtype):
    shapes = [(9, 30, 5, False), (1, 1, 1, False), (3, 7, 2, False), (100, 1000, 16, False),
              (5, 513, 40, False), (17, 300, 3, True), (0, 10, 4, False)]
    out = []
    for i, (m, n, d, use_strides) in enumerate(shapes):
        dataset = _randn((n, d), dtype, device, seed=90 + i)
        queries = _randn((m, d), dtype, device, seed=100 + i, scale=1.5)
        if use_strides:
            queries, dataset = strided(queries), strided(dataset)
        out.append(Sample(f"{m} queries, {n}x{d}{' strided' if use_strides else ''}", (queries, dataset)))
    return out


# --------------------------------------------------------------------------------------------
# mahalanobis
# --------------------------------------------------------------------------------------------
def gaussians(b, c, h, w, dtype, device, seed):
    """(B, C, H, W) embedding, (C, H*W) mean and (H*W, C, C) symmetric positive definite precision."""
    g = torch.Generator().manual_seed(seed)
    p = h * w
    embedding = torch.randn(b, c, h, w, generator=g, dtype=F64)
    mean = torch.randn(c, p, generator=g, dtype=F64) * 0.1
    a = torch.randn(p, c, c, generator=g, dtype=F64)
    precision = a @ a.transpose(1, 2) / max(c, 1) + 0.5 * torch.eye(c, dtype=F64)  # symmetric positive definite
    return tuple(t.to(dtype=dtype, device=device) for t in (embedding, mean, precision))


def _mahalanobis_samples(device, dtype):
    shapes = [(3, 7, 4, 4), (1, 1, 1, 1), (2, 3, 4, 5), (5, 100, 3, 3), (3, 17, 33, 2), (8, 64, 4, 5),
              (3, 8, 6, 5), (0, 3, 2, 2)]
    out = []
    for i, (b, c, h, w) in enumerate(shapes):
        embedding, mean, precision = gaussians(b, c, h, w, dtype, device, seed=110 + i)
        if i == 6:
            embedding = embedding.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
        out.append(Sample(f"{(b, c, h, w)}{' strided' if i == 6 else ''}", (embedding, mean, precision)))
    # Packed precisions: the upper triangles row by row, (H*W, C*(C+1)/2).
    for i, (b, c, h, w) in enumerate([(3, 7, 4, 4), (1, 1, 1, 1), (5, 100, 3, 3), (8, 64, 4, 5), (4, 70, 2, 3)]):
        embedding, mean, precision = gaussians(b, c, h, w, dtype, device, seed=140 + i)
        rows, columns = torch.triu_indices(c, c, device=device)
        out.append(Sample(f"{(b, c, h, w)} packed", (embedding, mean, precision[:, rows, columns].contiguous())))
    return out


# --------------------------------------------------------------------------------------------
# separable_blur2d
# --------------------------------------------------------------------------------------------
BORDERS = ("reflect", "replicate", "constant", "circular")


def blur_taps(taps, dtype, device, seed):
    """``taps`` random kernel taps in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(taps, generator=g, dtype=F64).to(dtype=dtype, device=device)  # asymmetric: checks tap order


def _blur_reference(input, kernel_y, kernel_x, border_type, same_padding):
    return reference.separable_blur2d(input, kernel_y, kernel_x, border_type, "same" if same_padding else "valid")


def _separable_blur2d_samples(device, dtype):
    # (B, C, H, W, Ky, Kx): single rows and columns, kernels as wide as the input, even taps.
    shapes = [(2, 3, 12, 10, 5, 3), (1, 1, 1, 1, 1, 1), (2, 3, 17, 29, 5, 3), (1, 2, 9, 9, 9, 9),
              (3, 1, 40, 23, 7, 1), (1, 1, 1, 12, 1, 5), (2, 2, 11, 13, 4, 6)]
    out = []
    for i, ((b, c, h, w, ky, kx), border, same) in enumerate(itertools.product(shapes, BORDERS, (True, False))):
        if same and border in ("reflect", "circular") and (ky // 2 >= h or kx // 2 >= w):
            continue  # the reference (F.pad) refuses; test_separable_blur2d.py covers these
        if not same and (ky > h or kx > w):
            continue  # no output
        x = _randn((b, c, h, w), dtype, device, seed=i)
        args = (x, blur_taps(ky, dtype, device, i), blur_taps(kx, dtype, device, i + 1000), border, same)
        out.append(Sample(f"{(b, c, h, w)} k{ky}x{kx} {border} {'same' if same else 'valid'}", args))
    x = strided(_randn((2, 4, 15, 20), dtype, device, seed=7)).transpose(2, 3)
    kernels = blur_taps(5, dtype, device, 7), blur_taps(3, dtype, device, 8)
    out.append(Sample("(2, 4, 20, 15) strided", (x, *kernels, "reflect", True)))
    x = _randn((0, 3, 8, 8), dtype, device, seed=9)
    kernels = blur_taps(3, dtype, device, 9), blur_taps(3, dtype, device, 10)
    out.append(Sample("(0, 3, 8, 8)", (x, *kernels, "reflect", True)))
    return out


def _separable_blur2d_grad_samples(device):
    out = []
    for border, same in itertools.product(BORDERS, (True, False)):
        x = _randn((2, 2, 9, 11), F64, device, seed=11)
        args = (x, blur_taps(5, F64, device, 5), blur_taps(3, F64, device, 6), border, same)
        out.append(Sample(f"(2, 2, 9, 11) k5x3 {border} {'same' if same else 'valid'}", args))
    return out


# --------------------------------------------------------------------------------------------
# sparse_sign_projection
# --------------------------------------------------------------------------------------------
def sign_pattern(k, d, density, seed, device):
    """CSR (crow (K + 1,), col (nnz,), signs (nnz,) int8) of a random K x D sign matrix."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(k, d, generator=g) < density
    crow = torch.zeros(k + 1, dtype=torch.int64)
    crow[1:] = mask.sum(1).cumsum(0)
    col = mask.nonzero()[:, 1].contiguous()
    signs = (torch.randint(0, 2, (col.numel(),), generator=g) * 2 - 1).to(torch.int8)
    return crow.to(device), col.to(device), signs.to(device)


def _sparse_sign_projection_samples(device, dtype):
    shapes = [(9, 20, 6, 0.3, False), (1, 1, 1, 1.0, False), (7, 5, 3, 0.5, False), (300, 1536, 244, 1 / 39.2, False),
              (33, 64, 1, 0.0, False), (50, 40000, 9, 0.01, False), (70, 1536, 284, 1536**-0.5, True),
              (0, 32, 10, 0.3, False),
              (5, 0, 3, 0.3, False)]
    out = []
    for i, (n, d, k, density, use_strides) in enumerate(shapes):
        x = _randn((n, d), dtype, device, seed=120 + i)
        if use_strides:
            x = x.T.contiguous().T  # column-major rows
        pattern = sign_pattern(k, d, density, 130 + i, device)
        label = f"{n}x{d} -> {k} density {density:.3g}{' strided' if use_strides else ''}"
        out.append(Sample(label, (x, *pattern, 0.37)))
    return out


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
_EXACT = {F32: (0.0, 0.0), F64: (0.0, 0.0), BF16: (0.0, 0.0)}

ENTRIES = [
    Entry(
        name="banded_resample2d", samples=_banded_resample2d_samples, reference=reference.banded_resample2d,
        dtypes=(F32, F64), tolerances={F32: (1e-5, 1e-5), F64: (1e-12, 1e-12)},
        bench=lambda d: cases.upsample_blur_case(d, 2, 14, 56),
    ),
    Entry(
        # Precisions reach 1 / ridge = 100 in the directions the images do not span.
        name="gaussian_fit", samples=_gaussian_fit_samples, reference=reference.gaussian_fit,
        dtypes=(F32, F64), tolerances={F32: (1e-4, 1e-4), F64: (1e-9, 1e-9)},
        bench=lambda d: cases.gaussian_fit_case(d, 6, 5, 4), opcheck_samples=2,  # both routes
    ),
    Entry(
        name="kcenter_greedy_", samples=_kcenter_greedy_samples, reference=reference.kcenter_greedy_,
        dtypes=(F32, BF16), tolerances=_EXACT, bench=lambda d: cases.kcenter_greedy_case(d, 2000, 512, 0.01),
    ),
    Entry(
        name="kcenter_step_", samples=lambda device, dtype: _kcenter_step_samples(device, dtype, to_row=False),
        reference=reference.kcenter_step_, dtypes=(F32, F64), cuda_dtypes=(F32,), tolerances=_EXACT,
        bench=lambda d: cases.kcenter_step_case(d, 3000, 40),
    ),
    Entry(
        name="kcenter_step_to_", samples=lambda device, dtype: _kcenter_step_samples(device, dtype, to_row=True),
        reference=reference.kcenter_step_to_, dtypes=(F32, F64), cuda_dtypes=(F32,), tolerances=_EXACT,
        bench=lambda d: cases.kcenter_step_case(d, 3000, 40, to_row=True),
    ),
    Entry(
        name="kde_log_sum_exp", samples=_kde_log_sum_exp_samples, reference=reference.kde_log_sum_exp,
        dtypes=(F32, F64), tolerances={F32: (1e-5, 1e-5), F64: (1e-10, 1e-10)},
        bench=lambda d: cases.kde_case(d, 300, 4, 20),
    ),
    Entry(
        name="mahalanobis", samples=_mahalanobis_samples, reference=reference.mahalanobis,
        dtypes=(F32, F64), tolerances={F32: (1e-4, 1e-4), F64: (1e-10, 1e-10)},
        bench=lambda d: cases.mahalanobis_case(d, 3, 6, 5),
    ),
    Entry(
        name="separable_blur2d", samples=_separable_blur2d_samples, reference=_blur_reference,
        dtypes=(F32, F64), tolerances={F32: (1e-5, 1e-5), F64: (1e-12, 1e-12)},
        bench=lambda d: cases.gaussian_blur_case(d, 2, 48),
        grad_args=(0,), grad_samples=_separable_blur2d_grad_samples, opcheck_samples=2,  # same and valid
    ),
    Entry(
        name="sparse_sign_projection", samples=_sparse_sign_projection_samples,
        reference=reference.sparse_sign_projection, dtypes=(F32, F64), tolerances={F32: (2e-5, 2e-5), F64: (1e-12, 1e-12)},
        bench=lambda d: cases.sparse_projection_case(d, 500, 256),
    ),
]

TABLE: Dict[str, Entry] = {entry.name: entry for entry in ENTRIES}
