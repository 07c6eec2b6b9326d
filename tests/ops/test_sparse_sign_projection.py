"""anomaly_kernels::sparse_sign_projection beyond the conformance table: the CUDA kernel's tile
edges, long pattern rows, argument errors and malformed patterns."""

import pytest
import torch
from conformance import sign_pattern
from cuda_sim import operators as simulated
from cuda_sim.kernels import TURING_LIKE, Device, copies_from, late_copies, reverse_thread_order, sparse_sign_projection_plan

from anomaly_kernels import ops, reference


# Sizes where the CUDA kernel's paths change: 32-row (float32) / 16-row (float64) tiles with a
# partial last tile (31, 33, 1000 rows), widths of 1 and 7 columns (one slab), 1536 (rows staged
# in slabs of 512, every output in one result block on an H100), 3000 (more, partial slabs), one
# output or many.
@pytest.mark.parametrize("n", [1, 31, 33, 1000])
@pytest.mark.parametrize("d", [1, 7, 1536, 3000])
@pytest.mark.parametrize("k", [1, 284])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tile_edges_match_dense_reference(device, n, d, k, dtype):
    crow, col, signs = sign_pattern(k, d, min(1.0, d**-0.5), seed=n + d + k, device=device)
    x = torch.randn(n, d, dtype=dtype, device=device)
    out = ops.sparse_sign_projection(x, crow, col, signs, 0.37)
    expected = reference.sparse_sign_projection(x, crow, col, signs, 0.37)
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_rows_many_outputs_and_empty_rows(device, dtype):
    """Pattern rows of ~770 entries (several index slices per output), 3000 outputs (several
    result chunks) and empty pattern rows, against the dense reference."""
    for n, d, k, density in [(45, 1536, 20, 0.5), (70, 48, 3000, 0.1), (40, 64, 9, 0.0)]:
        crow, col, signs = sign_pattern(k, d, density, seed=k, device=device)
        x = torch.randn(n, d, dtype=dtype, device=device)
        tol = 2e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(
            ops.sparse_sign_projection(x, crow, col, signs, 0.5),
            reference.sparse_sign_projection(x, crow, col, signs, 0.5), rtol=tol, atol=tol,
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("slab_width", ["1", "100", "299", "5000"])
def test_cuda_forced_slab_widths_give_the_projection(monkeypatch, slab_width):
    # ANOMALY_KERNELS_PROJECTION_SLAB overrides the slab width the kernel picks; only the order
    # of the float sums changes.
    crow, col, signs = sign_pattern(45, 300, 0.2, seed=5, device="cuda")
    x = torch.randn(70, 300, device="cuda")
    monkeypatch.setenv("ANOMALY_KERNELS_PROJECTION_SLAB", slab_width)
    out = ops.sparse_sign_projection(x, crow, col, signs, 0.7)
    expected = reference.sparse_sign_projection(x, crow, col, signs, 0.7)
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(input=torch.randn(4)), ValueError, "input must be 2-D"),
        (dict(input=torch.randn(4, 8).half()), TypeError, "input must be float32 or float64"),
        (dict(crow_indices=torch.zeros(3, dtype=torch.int32)), ValueError, "crow_indices must be a 1-D int64"),
        (dict(col_indices=torch.zeros(2, dtype=torch.int32)), ValueError, "col_indices must be a 1-D int64"),
        (dict(signs=torch.ones(3, dtype=torch.int8)), ValueError, "signs must be int8 with the shape"),
    ],
)
def test_bad_arguments_are_named(change, error, match):
    args = dict(
        input=torch.randn(4, 8), crow_indices=torch.tensor([0, 1, 2]), col_indices=torch.tensor([0, 7]),
        signs=torch.tensor([1, -1], dtype=torch.int8), scale=1.0,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        ops.sparse_sign_projection(**args)


def test_native_checks_the_pattern_on_cpu():
    args = (torch.randn(4, 8), torch.tensor([0, 1, 2]), torch.tensor([0, 8]), torch.tensor([1, -1], dtype=torch.int8), 1.0)
    with pytest.raises(RuntimeError, match=r"col_indices must lie in \[0, 8\)"):
        torch.ops.anomaly_kernels.sparse_sign_projection(*args)
    with pytest.raises(RuntimeError, match="crow_indices must start at 0"):
        torch.ops.anomaly_kernels.sparse_sign_projection(
            torch.randn(4, 8), torch.tensor([0, 1, 3]), torch.tensor([0, 7]), torch.tensor([1, -1], dtype=torch.int8), 1.0
        )
    with pytest.raises(RuntimeError, match="signs must be \\+1 or -1, got 2 at entry 1"):
        torch.ops.anomaly_kernels.sparse_sign_projection(
            torch.randn(4, 8), torch.tensor([0, 1, 2]), torch.tensor([0, 7]), torch.tensor([1, 2], dtype=torch.int8), 1.0
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_malformed_pattern_never_reads_outside_on_cuda():
    """The CUDA kernel cannot raise without synchronising: offsets beyond the stored entries and
    columns outside [0, D) are ignored instead of read."""
    x = torch.randn(4, 8, device="cuda")
    crow = torch.tensor([0, 1, 5], device="cuda")  # row 1 claims 4 entries, 1 is stored
    col = torch.tensor([3, 8], device="cuda")
    signs = torch.tensor([1, -1], dtype=torch.int8, device="cuda")
    out = torch.ops.anomaly_kernels.sparse_sign_projection(x, crow, col, signs, 1.0)
    torch.testing.assert_close(out[:, 0], x[:, 3])
    assert torch.equal(out[:, 1], torch.zeros(4, device="cuda"))  # column 8 is outside D = 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_decreasing_offsets_and_odd_signs_never_read_outside_on_cuda():
    """Row offsets are clamped to [0, nnz] and made non-decreasing (row j sums the entries from
    max(crow[:j + 1]) to max(crow[:j + 2])), zero signs add nothing and other signs count by
    their sign bit."""
    x = torch.randn(37, 6, device="cuda", dtype=torch.float64)
    crow = torch.tensor([-3, 5, 2, 6, 100], device="cuda")
    col = torch.tensor([0, 1, -2, 3, 4, 5], device="cuda")
    signs = torch.tensor([1, -1, 1, 0, 7, -5], dtype=torch.int8, device="cuda")
    out = torch.ops.anomaly_kernels.sparse_sign_projection(x, crow, col, signs, 2.0)
    expected = torch.stack([2 * (x[:, 0] - x[:, 1] + x[:, 4]), torch.zeros_like(x[:, 0]), -2 * x[:, 5], torch.zeros_like(x[:, 0])], 1)
    torch.testing.assert_close(out, expected)


# The CUDA kernel on the CPU simulation of the kernels (tests/cuda_sim), on every machine.
def test_simulated_cuda_malformed_pattern_never_reads_outside():
    x = torch.randn(4, 8)
    crow, col = torch.tensor([0, 1, 5]), torch.tensor([3, 8])
    out = simulated.sparse_sign_projection(x, crow, col, torch.tensor([1, -1], dtype=torch.int8), 1.0)
    torch.testing.assert_close(out[:, 0], x[:, 3])
    assert torch.equal(out[:, 1], torch.zeros(4))


def test_simulated_cuda_decreasing_offsets_and_odd_signs_never_read_outside():
    x = torch.randn(37, 6, dtype=torch.float64)
    crow = torch.tensor([-3, 5, 2, 6, 100])
    col = torch.tensor([0, 1, -2, 3, 4, 5])
    signs = torch.tensor([1, -1, 1, 0, 7, -5], dtype=torch.int8)
    out = simulated.sparse_sign_projection(x, crow, col, signs, 2.0)
    zero = torch.zeros_like(x[:, 0])
    expected = torch.stack([2 * (x[:, 0] - x[:, 1] + x[:, 4]), zero, -2 * x[:, 5], zero], 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("n,d,k,density", [(300, 1536, 303, 1 / 39.2), (70, 9000, 40, 0.01), (1000, 64, 1, 0.5)])
def test_simulated_cuda_projection_sizes(n, d, k, density):
    # PatchCore's projection width (three slabs of 512 columns), long rows in many slabs, and a
    # single output.
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(d))
    pattern = sign_pattern(k, d, density, seed=k, device="cpu")
    out = simulated.sparse_sign_projection(x, *pattern, 0.3)
    torch.testing.assert_close(out, reference.sparse_sign_projection(x, *pattern, 0.3), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("n,d,k", [(300, 1536, 303), (33, 100, 7)])
def test_simulated_cuda_stages_every_input_element_once(n, d, k):
    """The kernel's memory plan: each input row goes to shared memory once, slab by slab, when
    the results of all outputs fit next to the slabs (PatchCore's 303 outputs do)."""
    pattern = sign_pattern(k, d, 1 / 39.2, seed=k, device="cpu")
    assert sparse_sign_projection_plan(d, k, pattern[1].numel(), torch.float32)[2] == k
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(k))
    with copies_from(x) as counts:
        simulated.sparse_sign_projection(x, *pattern, 0.3)
    assert torch.equal(counts, torch.ones_like(counts))


def test_simulated_cuda_chunked_outputs_stage_the_input_once_per_chunk():
    """3000 outputs do not fit in one result block: each chunk stages the tile again, and the
    pattern (~4 times the shared memory) is read from global memory."""
    n, d, k = 40, 64, 3000
    pattern = sign_pattern(k, d, 0.1, seed=3, device="cpu")
    width, slabs, chunk, shared = sparse_sign_projection_plan(d, k, pattern[1].numel(), torch.float32)
    chunks = -(-k // chunk)
    assert (width, slabs, shared) == (64, 1, False) and chunks == 2
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(3))
    with copies_from(x) as counts:
        out = simulated.sparse_sign_projection(x, *pattern, 0.5)
    assert torch.equal(counts, torch.full_like(counts, chunks))
    torch.testing.assert_close(out, reference.sparse_sign_projection(x, *pattern, 0.5), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "d,k,dtype,device",
    [(1536, 303, torch.float32, None), (1536, 303, torch.float64, None), (1536, 1500, torch.float32, None),
     (100, 7, torch.float32, None), (1536, 303, torch.float32, TURING_LIKE), (9000, 40, torch.float64, TURING_LIKE)],
)
def test_simulated_cuda_plan_covers_the_row_and_fits(d, k, dtype, device):
    """Slabs cover the row in equal widths, chunks cover the outputs, and at PatchCore's size
    (1536 -> 303, density 1 / sqrt(1536)) on an H100-sized shared memory every output is summed
    in one pass over slabs of at least 256 columns with the pattern in shared memory."""
    on = {"device": device} if device else {}
    nnz = round(k * d**0.5)
    width, slabs, chunk, shared = sparse_sign_projection_plan(d, k, nnz, dtype, **on)
    assert slabs * width >= d > (slabs - 1) * width and 1 <= chunk <= k
    if device is None and k <= 303:
        assert chunk == k and width >= min(d, 256) and shared
    if (d, k, device) == (1536, 1500, None):  # all 1500 would leave ~100-column slabs: chunked
        assert width >= 256 and chunk < k and not shared
    # The plan is what the kernel runs with: forcing its own width changes nothing.
    assert sparse_sign_projection_plan(d, k, nnz, dtype, width, **on) == (width, slabs, chunk, shared)


@pytest.mark.parametrize("slab_width", [1, 7, 64, 100, 299, 300, 5000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simulated_cuda_any_slab_width_gives_the_projection(slab_width, dtype):
    """Rows staged in slabs of any width, the last one partial or not, through the two-buffer
    pipeline, with the pattern in shared memory: the same projection as the CPU kernel, and the
    same bits whatever the order of the simulated threads or however late the staged copies
    land. On a device whose shared memory holds the slabs but not the pattern, the pattern is
    read from global memory, with the same result."""
    n, d, k = 70, 300, 45
    x = torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(slab_width))
    pattern = sign_pattern(k, d, 0.2, seed=slab_width, device="cpu")
    out = simulated.sparse_sign_projection(x, *pattern, 0.7, slab_width=slab_width)
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ops.sparse_sign_projection(x, *pattern, 0.7), rtol=tol, atol=tol)
    with late_copies(), reverse_thread_order():
        assert torch.equal(simulated.sparse_sign_projection(x, *pattern, 0.7, slab_width=slab_width), out)
    small = Device(sms=3, smem_optin=24 * 1024, blocks_per_sm=1)
    nnz = pattern[1].numel()
    plan = sparse_sign_projection_plan(d, k, nnz, dtype, slab_width)
    small_plan = sparse_sign_projection_plan(d, k, nnz, dtype, slab_width, device=small)
    assert not small_plan[3]  # the pattern stays in global memory there
    small_out = simulated.sparse_sign_projection(x, *pattern, 0.7, slab_width=slab_width, device=small)
    if small_plan[0] == plan[0]:  # the same slabs: the same sums in the same order
        assert torch.equal(small_out, out)
    else:  # the forced width does not fit there: the device's own, in another order
        torch.testing.assert_close(small_out, out, rtol=tol, atol=tol)
