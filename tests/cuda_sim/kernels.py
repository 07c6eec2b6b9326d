"""Torch-facing calls of the simulated CUDA launchers (``entry_points.cpp``).

Each function takes CPU tensors laid out as the CUDA glue hands them to the launcher
(contiguous; the checks are the operators', not repeated here), runs the launcher on a
simulated device and returns a new tensor. A launch that fails raises ``SimulatedLaunchError``
with the CUDA error code and what the simulation saw.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass

import torch

from cuda_sim.build import load

BORDERS = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}


class SimulatedLaunchError(RuntimeError):
    def __init__(self, operator: str, code: int, detail: str):
        super().__init__(f"{operator}: CUDA error {code} ({detail or 'returned by the launcher'})")
        self.code = code


@dataclass(frozen=True)
class Device:
    """A simulated GPU: multiprocessors, opt-in shared memory per block, resident blocks per SM."""

    sms: int = 4
    smem_optin: int = 227 * 1024
    blocks_per_sm: int = 2


H100_LIKE = Device(sms=4, smem_optin=227 * 1024, blocks_per_sm=2)  # few SMs: small grids, same limits
TURING_LIKE = Device(sms=2, smem_optin=64 * 1024, blocks_per_sm=1)  # sm_75's 64 KB opt-in
ONE_BLOCK = Device(sms=1, smem_optin=100 * 1024, blocks_per_sm=1)  # every grid-wide loop in one block


@contextlib.contextmanager
def _switched_on(setter):
    setter(1)
    try:
        yield
    finally:
        setter(0)


def reverse_thread_order():
    """Inside: simulated threads take their turns in reverse launch order. A kernel without
    races computes the same bits either way."""
    return _switched_on(load().sim_set_reverse_order)


def late_copies():
    """Inside: copies from global to shared memory started with cp.async land when the thread
    waits for them, not at once. A kernel that reads a stage before waiting for it (or before
    the barrier after the wait) then reads stale or unwritten shared memory."""
    return _switched_on(load().sim_set_late_copies)


@contextlib.contextmanager
def copies_from(buffer: torch.Tensor):
    """Inside: every 4-byte word of ``buffer`` (contiguous, 4- or 8-byte elements) counts how
    often kernels copy it into shared memory. Yields the counts, one int32 per word."""
    counts = torch.zeros(buffer.numel() * buffer.element_size() // 4, dtype=torch.int32)
    load().sim_count_copies_from(_ptr(buffer), _i64(buffer.numel() * buffer.element_size()), _ptr(counts))
    try:
        yield counts
    finally:
        load().sim_count_copies_from(ctypes.c_void_p(0), _i64(0), ctypes.c_void_p(0))


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    if t is None:
        return ctypes.c_void_p(0)
    assert t.is_contiguous() and t.device.type == "cpu"
    return ctypes.c_void_p(t.data_ptr())


def _call(operator: str, device: Device, function, *args) -> None:
    lib = load()
    lib.sim_use_device(device.sms, device.smem_optin, device.blocks_per_sm)
    code = function(*args)
    if code != 0:
        raise SimulatedLaunchError(operator, code, lib.sim_last_failure().decode())
    pending = lib.sim_pending_error()
    if pending != 0:  # a launch failed and the launcher reported success
        raise SimulatedLaunchError(operator, pending, "left pending by a launcher that returned success")


def _i64(v: int) -> ctypes.c_int64:
    return ctypes.c_int64(int(v))


def _suffix(dtype: torch.dtype) -> str:
    return {torch.float32: "f32", torch.float64: "f64"}[dtype]


def mahalanobis(embedding, mean, precision, group: int = 0, device: Device = H100_LIKE, streamed: bool = True) -> torch.Tensor:
    """(B, C, H, W), (C, H*W), (H*W, C, C) or packed (H*W, C(C+1)/2) -> distances (B, H*W).

    ``streamed`` False keeps groups of up to 32 images on the tiled kernel."""
    b, c = embedding.shape[:2]
    p = mean.shape[1]
    out = torch.full((b, p), float("nan"), dtype=embedding.dtype)
    function = getattr(load(), f"sim_mahalanobis_{_suffix(embedding.dtype)}")
    packed = int(precision.dim() == 2)
    args = (_ptr(embedding), _ptr(mean), _ptr(precision), packed, _i64(b), _i64(c), _i64(p), group, int(streamed), _ptr(out))
    _call("mahalanobis", device, function, *args)
    return out


def separable_blur2d(x, kernel_y, kernel_x, border="reflect", same=True, tile_rows=0, device=H100_LIKE):
    """(B, C, H, W) blurred by the separable kernel; output (B, C, H', W')."""
    b, c, h, w = x.shape
    ky, kx = kernel_y.numel(), kernel_x.numel()
    out_h, out_w = (h, w) if same else (h - ky + 1, w - kx + 1)
    out = torch.full((b, c, out_h, out_w), float("nan"), dtype=x.dtype)
    function = getattr(load(), f"sim_separable_blur2d_{_suffix(x.dtype)}")
    args = (_ptr(x), _ptr(out), _i64(b * c), _i64(h), _i64(w), _ptr(kernel_y), _i64(ky), _ptr(kernel_x), _i64(kx))
    _call("separable_blur2d", device, function, *args, int(same), BORDERS[border], tile_rows)
    return out


def banded_resample2d(x, start_y, weights_y, start_x, weights_x, device=H100_LIKE):
    """(B, C, H, W) resampled by a band per axis; output (B, C, len(start_y), len(start_x))."""
    b, c, h, w = x.shape
    out = torch.full((b, c, start_y.numel(), start_x.numel()), float("nan"), dtype=x.dtype)
    args = (_ptr(x), _ptr(out), _i64(b * c), _i64(h), _i64(w), _i64(start_y.numel()), _i64(start_x.numel()))
    bands = (_ptr(start_y), _ptr(weights_y), _i64(weights_y.shape[1]), _ptr(start_x), _ptr(weights_x))
    function = getattr(load(), f"sim_banded_resample2d_{_suffix(x.dtype)}")
    _call("banded_resample2d", device, function, *args, *bands, _i64(weights_x.shape[1]))
    return out


def kde_log_sum_exp(queries, dataset, device=H100_LIKE) -> torch.Tensor:
    """(M, D), (N, D) -> (M,) log sum exp of -|q - x|^2 / 2."""
    (m, d), n = queries.shape, dataset.shape[0]
    out = torch.full((m,), float("nan"), dtype=queries.dtype)
    args = (_ptr(queries), _ptr(dataset), _i64(m), _i64(n), _i64(d), _ptr(out))
    _call("kde_log_sum_exp", device, getattr(load(), f"sim_kde_log_sum_exp_{_suffix(queries.dtype)}"), *args)
    return out


def sparse_sign_projection(x, crow, col, signs, scale: float, slab_width: int = 0, device=H100_LIKE) -> torch.Tensor:
    """(N, D) -> (N, K) with the signed sparse (K, D) matrix in CSR form; slab_width > 0 forces
    the kernel's slab width."""
    n, d = x.shape
    k = crow.numel() - 1
    out = torch.full((n, k), float("nan"), dtype=x.dtype)
    args = (_ptr(x), _i64(n), _i64(d), _ptr(crow), _ptr(col), _ptr(signs), _i64(col.numel()), _i64(k))
    function = getattr(load(), f"sim_sparse_sign_projection_{_suffix(x.dtype)}")
    _call("sparse_sign_projection", device, function, *args, ctypes.c_double(scale), _ptr(out), _i64(slab_width))
    return out


def sparse_sign_projection_plan(
    d: int, k: int, nnz: int, dtype: torch.dtype, slab_width: int = 0, device=H100_LIKE
) -> tuple[int, int, int, bool]:
    """(slab width, slabs, output chunk, pattern in shared memory) of the projection kernel for
    (N, d) -> (N, k) rows with a pattern of nnz entries."""
    plan = torch.zeros(4, dtype=torch.int64)
    elem_bytes = torch.empty((), dtype=dtype).element_size()
    args = (_i64(d), _i64(k), _i64(nnz), elem_bytes, _i64(slab_width), _ptr(plan))
    _call("sparse_sign_projection", device, load().sim_sparse_sign_projection_plan, *args)
    width, slabs, chunk, shared = (int(v) for v in plan)
    return width, slabs, chunk, bool(shared)


def kcenter_step_(features, min_distances, center: int | None, center_row=None, device=H100_LIKE) -> int:
    """One pass: min_distances (N,) lowered in place by the distances to row `center` (or to
    `center_row`); returns the farthest row."""
    n, d = features.shape
    argmax = torch.full((1,), -7, dtype=torch.int64)
    center_t = None if center is None else torch.tensor([center], dtype=torch.int64)
    args = (_ptr(features), _i64(n), _i64(d), _ptr(min_distances), _ptr(center_t), _ptr(center_row), _ptr(argmax))
    _call("kcenter_step_", device, load().sim_kcenter_step, *args)
    return int(argmax)


def kcenter_greedy_(
    features, min_distances, nearest, centers, begin, end, pick=True, prune=True,
    cooperative=True, max_blocks_per_sm=0, triangle_bytes=-1, device=H100_LIKE,
) -> tuple[int, int, int]:
    """The passes [begin, end) in place on min_distances (N,), nearest (N,) int32 and centers
    int64; features float32 or bfloat16. Returns the device-side error (kind, where, value)."""
    n, d = features.shape
    error = torch.zeros(3, dtype=torch.int64)
    bf16 = int(features.dtype == torch.bfloat16)
    args = (_ptr(features), bf16, _i64(n), _i64(d), _ptr(min_distances), _ptr(nearest), _ptr(centers))
    flags = (int(pick), int(prune), int(cooperative), max_blocks_per_sm, _i64(triangle_bytes), _ptr(error))
    _call("kcenter_greedy_", device, load().sim_kcenter_greedy, *args, _i64(begin), _i64(end), *flags)
    return tuple(int(v) for v in error)
