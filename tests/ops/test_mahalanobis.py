"""anomaly_kernels::mahalanobis beyond the conformance table: numpy per position, clamping,
the CPU image groups and CUDA tile edges, NaN and infinity, the cuBLAS route."""

import numpy as np
import pytest
import torch
from conformance import gaussians
from cuda_sim import operators as simulated
from cuda_sim.kernels import TURING_LIKE, copies_from, late_copies

from anomaly_kernels import ops, reference


def test_matches_numpy_per_position():
    embedding, mean, precision = gaussians(4, 6, 3, 3, torch.float64, "cpu", seed=1)
    out = ops.mahalanobis(embedding, mean, precision).numpy()
    e, m, s = embedding.numpy(), mean.numpy(), precision.numpy()
    for b in range(4):
        for p in range(9):
            d = e[b, :, p // 3, p % 3] - m[:, p]
            assert out[b, 0, p // 3, p % 3] == pytest.approx(np.sqrt(d @ s[p] @ d), rel=1e-12)


def test_zero_distance_at_the_mean_and_negative_forms_clamp(device):
    embedding, mean, precision = gaussians(2, 5, 2, 2, torch.float32, device, seed=2)
    at_mean = mean.reshape(1, 5, 2, 2).expand(2, -1, -1, -1).contiguous()
    assert torch.equal(ops.mahalanobis(at_mean, mean, precision), torch.zeros(2, 1, 2, 2, device=device))
    negative = -precision  # an indefinite "precision" gives negative forms, clamped to 0
    assert (ops.mahalanobis(embedding, mean, negative) == 0).all()


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(embedding=torch.randn(2, 3, 4)), ValueError, "embedding must be 4-D"),
        (dict(embedding=torch.randn(2, 3, 2, 2).half()), TypeError, "embedding must be float32"),
        (dict(mean=torch.randn(3, 5)), ValueError, r"mean must have shape \(3, 4\)"),
        (dict(precision=torch.randn(4, 3, 2)), ValueError, r"precision must have shape \(4, 3, 3\)"),
        (dict(precision=torch.randn(4, 3, 3).double()), TypeError, "precision must be float32"),
    ],
)
def test_bad_arguments_are_named(change, error, match):
    args = dict(embedding=torch.randn(2, 3, 2, 2), mean=torch.randn(3, 4), precision=torch.randn(4, 3, 3))
    args.update(change)
    with pytest.raises(error, match=match):
        ops.mahalanobis(**args)


@pytest.mark.parametrize("b,c", [(13, 40), (15, 16), (9, 33)])
def test_every_image_group_size(b, c):
    """Batches that mix the kernel's groups of 8, 4, 2 and 1 images, with and without a tail
    of columns beyond the last whole vector block."""
    embedding, mean, precision = gaussians(b, c, 3, 2, torch.float32, "cpu", seed=b + c)
    torch.testing.assert_close(
        ops.mahalanobis(embedding, mean, precision), reference.mahalanobis(embedding, mean, precision), rtol=1e-4, atol=1e-4
    )


def _check_against_float64_reference(embedding, mean, precision):
    out = ops.mahalanobis(embedding, mean, precision)
    expected = reference.mahalanobis(embedding.double(), mean.double(), precision.double())
    assert out.shape == expected.shape and out.dtype == embedding.dtype
    # float32 forms sum ~C^2 rounded products: relative error grows slowly with C.
    tol = 5e-5 * max(1.0, embedding.shape[1] / 100) ** 0.5 if embedding.dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("c", [1, 2, 63, 64, 65, 130])
@pytest.mark.parametrize("b", [1, 3, 64, 65, 130])
def test_tile_and_image_group_edges(device, b, c):
    """The CUDA kernel works on 64 x 64 tiles of each matrix and groups of 1, 4, 8, 16, 32 or
    64 images (more images: several groups): sizes on both sides of those edges."""
    embedding, mean, precision = gaussians(b, c, 3, 2, torch.float32, device, seed=b * 3 + c)
    _check_against_float64_reference(embedding, mean, precision)


@pytest.mark.parametrize("b,c,h,w", [(1, 2048, 1, 1), (3, 2048, 1, 1), (5, 300, 1, 1), (17, 100, 1, 2), (33, 70, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_few_positions_large_matrices(device, b, c, h, w, dtype):
    """Few positions: the CUDA kernel splits each matrix's tiles over several blocks and adds
    their partial forms in a second pass."""
    embedding, mean, precision = gaussians(b, c, h, w, dtype, device, seed=c)
    _check_against_float64_reference(embedding, mean, precision)


@pytest.mark.parametrize("b,c", [(2, 64), (9, 100), (3, 6), (4, 550)])
def test_unaligned_precision_rows(device, b, c):
    """Rows of C floats start on 16-, 8- or 4-byte boundaries (C = 64, 550, 6), and a precision
    that starts one element into its storage moves every row off the 16-byte grid: the CUDA
    kernel then copies with narrower loads."""
    embedding, mean, precision = gaussians(b, c, 2, 3, torch.float32, device, seed=c)
    storage = torch.empty(precision.numel() + 1, dtype=precision.dtype, device=device)
    shifted = storage[1:].view_as(precision).copy_(precision)
    assert shifted.is_contiguous() and shifted.storage_offset() == 1
    torch.testing.assert_close(
        ops.mahalanobis(embedding, mean, shifted), ops.mahalanobis(embedding, mean, precision), rtol=1e-6, atol=1e-6
    )
    _check_against_float64_reference(embedding, mean, shifted)


def test_float64_at_every_image_group(device):
    for b in (1, 4, 8, 16, 32, 64):
        embedding, mean, precision = gaussians(b, 70, 2, 2, torch.float64, device, seed=b)
        _check_against_float64_reference(embedding, mean, precision)


def test_nan_stays_nan_and_stays_local(device):
    """A NaN feature gives a NaN distance for its image and position only (as the reference's
    clamp_min does: a NaN form is not clamped to 0)."""
    embedding, mean, precision = gaussians(3, 100, 2, 3, torch.float32, device, seed=5)
    embedding[1, 17, 1, 2] = float("nan")
    out = ops.mahalanobis(embedding, mean, precision)
    expected = reference.mahalanobis(embedding, mean, precision)
    assert torch.isnan(out[1, 0, 1, 2]) and torch.isnan(expected[1, 0, 1, 2])
    finite = torch.ones_like(out, dtype=torch.bool)
    finite[1, 0, 1, 2] = False
    assert torch.isfinite(out[finite]).all()
    torch.testing.assert_close(out[finite], expected[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c", [5, 100, 550])
def test_infinite_feature_gives_infinite_distance(device, c):
    """With a positive matrix and features above the mean every term of the form is positive,
    so an infinite feature gives +inf in any summation order."""
    precision = (0.1 * torch.ones(c, c) + 0.5 * torch.eye(c)).expand(4, c, c).contiguous().to(device)
    mean = torch.zeros(c, 4, device=device)
    embedding = torch.rand(2, c, 2, 2, generator=torch.Generator().manual_seed(c)).to(device) + 0.1
    embedding[0, c // 2, 0, 1] = float("inf")
    out = ops.mahalanobis(embedding, mean, precision)
    expected = reference.mahalanobis(embedding, mean, precision)
    assert out[0, 0, 0, 1] == float("inf") and expected[0, 0, 0, 1] == float("inf")
    out[0, 0, 0, 1] = expected[0, 0, 0, 1] = 0
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_cublas_route_is_taken_only_where_it_was_measured_faster():
    # H200 measurements: native faster up to 16 images (8 at C >= 512) and at C = 100 with 32.
    assert not ops.cublas_scores_faster(32, 100, torch.float32)
    assert not ops.cublas_scores_faster(16, 384, torch.float32)
    assert not ops.cublas_scores_faster(8, 550, torch.float32)
    assert ops.cublas_scores_faster(12, 550, torch.float32)
    assert ops.cublas_scores_faster(24, 200, torch.float32)
    assert not ops.cublas_scores_faster(64, 550, torch.float64)


def test_cublas_route_is_not_taken_with_tf32_matmuls():
    """With TF32 allowed the batched product would round its inputs to 10-bit mantissas; the
    native kernel stays exact in float32, so it keeps the call."""
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert not ops.cublas_scores_faster(32, 550, torch.float32)
    finally:
        torch.set_float32_matmul_precision(saved)
    assert ops.cublas_scores_faster(32, 550, torch.float32)


def test_batched_matmul_route_ignores_autocast():
    """Under autocast the batched product would run in bfloat16 (about 3 significant digits);
    the route turns autocast off and gives the float32 result."""
    embedding, mean, precision = gaussians(4, 48, 2, 3, torch.float32, "cpu", seed=21)
    exact = ops._mahalanobis_batched_matmul(embedding, mean, precision)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = ops._mahalanobis_batched_matmul(embedding, mean, precision)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, exact)


def test_batched_matmul_route_matches_reference_in_chunks_with_nan(device, monkeypatch):
    embedding, mean, precision = gaussians(5, 40, 3, 7, torch.float32, device, seed=11)
    embedding[2, 3, 1, 4] = float("nan")
    monkeypatch.setattr(ops, "_MATMUL_SCORE_ELEMENTS", 5 * 40 * 4)  # 4 positions per chunk
    out = ops._mahalanobis_batched_matmul(embedding, mean, precision)
    expected = reference.mahalanobis(embedding, mean, precision)
    assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().sum() == 1
    torch.testing.assert_close(out.nan_to_num(), expected.nan_to_num(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("per_chunk", [1, 6, 20, 21])  # uneven chunks are evened out: 21 = 11 + 10 at 20
def test_batched_matmul_route_covers_every_position_once(per_chunk, monkeypatch):
    embedding, mean, precision = gaussians(2, 8, 3, 7, torch.float32, "cpu", seed=12)
    monkeypatch.setattr(ops, "_MATMUL_SCORE_ELEMENTS", 2 * 8 * per_chunk)
    out = ops._mahalanobis_batched_matmul(embedding, mean, precision)
    torch.testing.assert_close(out, reference.mahalanobis(embedding, mean, precision), rtol=1e-4, atol=1e-4)
    empty = ops._mahalanobis_batched_matmul(embedding[:, :, :0], mean[:, :0], precision[:0])
    assert empty.shape == (2, 1, 0, 7)


def test_routed_cuda_scores_equal_the_native_kernel_and_reference():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    embedding, mean, precision = gaussians(24, 200, 3, 5, torch.float32, "cuda", seed=2)
    assert ops.cublas_scores_faster(24, 200, torch.float32)
    routed = ops.mahalanobis(embedding, mean, precision)
    native = torch.ops.anomaly_kernels.mahalanobis(embedding, mean, precision)
    torch.testing.assert_close(routed, native, rtol=1e-4, atol=1e-4)
    _check_against_float64_reference(embedding, mean, precision)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("group", [1, 4, 8, 16, 32, 64, 48])
def test_every_image_group_asked_for_gives_the_same_scores_on_cuda(monkeypatch, group):
    """ANOMALY_KERNELS_MAHALANOBIS_GROUP (a tuning knob of the benchmarks) changes how many
    images share a read of the precisions, never the scores; 48 rounds up to 64."""
    embedding, mean, precision = gaussians(37, 70, 2, 3, torch.float32, "cuda", seed=group)
    default = torch.ops.anomaly_kernels.mahalanobis(embedding, mean, precision)
    monkeypatch.setenv("ANOMALY_KERNELS_MAHALANOBIS_GROUP", str(group))
    torch.testing.assert_close(torch.ops.anomaly_kernels.mahalanobis(embedding, mean, precision), default,
                               rtol=1e-5, atol=1e-5)
    _check_against_float64_reference(embedding, mean, precision)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_more_channels_than_the_cuda_kernel_holds_fall_back_to_batched_matmul_on_cuda():
    """float64 C = 25,000 exceeds the kernel's shared memory on every GPU (24,896 at 227 KB):
    the operator says so by name and ops.mahalanobis scores with the batched product instead."""
    c = 25_000
    embedding = torch.randn(2, c, 1, 1, dtype=torch.float64, device="cuda")
    mean = torch.zeros(c, 1, dtype=torch.float64, device="cuda")
    precision = (0.5 * torch.eye(c, dtype=torch.float64, device="cuda"))[None]
    with pytest.raises(RuntimeError, match="C = 25000 channels exceed what the CUDA kernel holds"):
        torch.ops.anomaly_kernels.mahalanobis(embedding, mean, precision)
    out = ops.mahalanobis(embedding, mean, precision)
    expected = (0.5 * embedding.square().sum(dim=1, keepdim=True)).sqrt()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_route_choice_follows_the_per_backend_precision_setting():
    """torch's newer per-backend setting (fp32_precision) makes get_float32_matmul_precision
    raise; the route then reads that setting instead: TF32 keeps the native kernel."""
    saved = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        assert not ops.cublas_scores_faster(32, 550, torch.float32)
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        assert ops.cublas_scores_faster(32, 550, torch.float32)
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved


def test_traced_cuda_calls_record_the_operator_without_choosing_a_route(monkeypatch):
    """Under tracing the route (a Python decision on sizes and global settings) is not taken:
    the graph holds the operator. Checked with fake CUDA tensors, which need no GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def no_route(*args):
        raise AssertionError("the cuBLAS route was taken while tracing")

    monkeypatch.setattr(ops, "_mahalanobis_batched_matmul", no_route)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with FakeTensorMode():
        embedding = torch.empty(32, 550, 2, 2, device="cuda")
        out = ops.mahalanobis(embedding, torch.empty(550, 4, device="cuda"), torch.empty(4, 550, 550, device="cuda"))
    assert out.shape == (32, 1, 2, 2) and out.device.type == "cuda"


# The CUDA kernel on the CPU simulation of the kernels (tests/cuda_sim): the tile, image-group,
# split and alignment edges above, on every machine.
def _check_simulated(embedding, mean, precision, **kwargs):
    out = simulated.mahalanobis(embedding, mean, precision, **kwargs)
    full = precision if precision.dim() == 3 else None
    expected = reference.mahalanobis(embedding.double(), mean.double(), (full if full is not None else precision).double())
    tol = 5e-5 * max(1.0, embedding.shape[1] / 100) ** 0.5 if embedding.dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("c", [1, 2, 63, 64, 65, 130])
@pytest.mark.parametrize("b", [1, 3, 64, 65, 130])
def test_simulated_cuda_tile_and_image_group_edges(b, c):
    _check_simulated(*gaussians(b, c, 3, 2, torch.float32, "cpu", seed=b * 3 + c))


@pytest.mark.parametrize("b,c,h,w", [(1, 2048, 1, 1), (3, 700, 1, 1), (17, 100, 1, 2), (33, 70, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simulated_cuda_few_positions_large_matrices(b, c, h, w, dtype):
    _check_simulated(*gaussians(b, c, h, w, dtype, "cpu", seed=c))


@pytest.mark.parametrize("b,c", [(2, 64), (9, 100), (3, 6), (4, 550)])
def test_simulated_cuda_unaligned_precision_rows(b, c):
    embedding, mean, precision = gaussians(b, c, 2, 3, torch.float32, "cpu", seed=c)
    shifted = torch.empty(precision.numel() + 1)[1:].view_as(precision).copy_(precision)
    out = simulated.mahalanobis(embedding, mean, shifted)
    torch.testing.assert_close(out, simulated.mahalanobis(embedding, mean, precision), rtol=1e-6, atol=1e-6)
    _check_simulated(embedding, mean, shifted)


@pytest.mark.parametrize("group", [1, 4, 8, 16, 32, 64, 48])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simulated_cuda_every_image_group(group, dtype):
    # Copies land at the last moment the pipeline allows: a stage read early gives other bits.
    inputs = gaussians(37, 70, 2, 3, dtype, "cpu", seed=group)
    _check_simulated(*inputs, group=group)
    with late_copies():
        late = simulated.mahalanobis(*inputs, group=group)
    assert torch.equal(late, simulated.mahalanobis(*inputs, group=group))


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simulated_cuda_on_a_device_with_64_kb_of_shared_memory(packed, dtype):
    # sm_75's opt-in: the largest image groups no longer fit at C = 300 and smaller ones are
    # taken; two stages per tile for float64.
    embedding, mean, precision = gaussians(40, 300, 2, 2, dtype, "cpu", seed=3)
    if packed:
        rows, columns = torch.triu_indices(300, 300)
        precision = precision[:, rows, columns].contiguous()
    _check_simulated(embedding, mean, precision, device=TURING_LIKE)  # float32 streams (37 KB a block)
    with copies_from(precision) as counts:  # the tiled kernel's plan
        _check_simulated(embedding, mean, precision, device=TURING_LIKE, streamed=False)
    # The group that fits: 16 float32 or 8 float64 images, so 3 or 5 reads of every tile.
    images = 16 if dtype == torch.float32 else 8
    per_entry = counts.view(*precision.shape, -1)  # the counts of an entry's 4-byte words
    assert torch.equal(per_entry, per_entry[..., :1].expand_as(per_entry))
    if packed:
        expected = torch.full(precision.shape, -(-40 // images), dtype=torch.int32)
    else:
        expected = (_copied_per_group(300, images, element_bytes=precision.element_size()) * -(-40 // images))
        expected = expected.expand(4, 300, 300)
    assert torch.equal(per_entry[..., 0], expected)


def test_simulated_cuda_nan_stays_nan():
    embedding, mean, precision = gaussians(3, 100, 2, 3, torch.float32, "cpu", seed=5)
    embedding[1, 17, 1, 2] = float("nan")
    out = simulated.mahalanobis(embedding, mean, precision)
    assert torch.isnan(out[1, 0, 1, 2])
    finite = torch.ones_like(out, dtype=torch.bool)
    finite[1, 0, 1, 2] = False
    assert torch.isfinite(out[finite]).all()
    torch.testing.assert_close(out[finite], reference.mahalanobis(embedding, mean, precision)[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group", [0, 1, 8, 16, 32])
@pytest.mark.parametrize("c", [5, 100, 550])
def test_simulated_cuda_infinite_feature_gives_infinite_distance(c, group):
    # As test_infinite_feature_gives_infinite_distance: every term positive, so +inf whatever
    # the order; neither the padding of the last tile nor the skipped lower halves of the
    # diagonal tiles (small groups; 32 images read them whole) may turn it into 0 * inf = NaN.
    precision = (0.1 * torch.ones(c, c) + 0.5 * torch.eye(c)).expand(4, c, c).contiguous()
    mean = torch.zeros(c, 4)
    embedding = torch.rand(2, c, 2, 2, generator=torch.Generator().manual_seed(c)) + 0.1
    embedding[0, c // 2, 0, 1] = float("inf")
    out = simulated.mahalanobis(embedding, mean, precision, group=group)
    expected = reference.mahalanobis(embedding, mean, precision)
    assert out[0, 0, 0, 1] == float("inf")
    out[0, 0, 0, 1] = expected[0, 0, 0, 1] = 0
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def _copied_per_group(c: int, images: int, packed: bool = False, element_bytes: int = 4) -> torch.Tensor:
    """How often one image group copies each entry of a (c, c) precision (full layout) in the
    kernel's memory plan: the tiles above the diagonal once, those below never; diagonal tiles
    whole for groups of 32 or 64 images (arithmetic-bound), else only the entries on or above
    the diagonal plus those sharing a vector load with one (packed: entry by entry)."""
    rows, columns = torch.arange(c)[:, None], torch.arange(c)[None, :]
    tile_row, tile_col = rows // 64, columns // 64
    if images > 16:
        return (tile_row <= tile_col).int()
    row_bytes = c * element_bytes  # rows are read in pieces of 16, 8 or 4 bytes, the widest that fits
    piece_bytes = 16 if row_bytes % 16 == 0 else 8 if row_bytes % 8 == 0 else 4
    per_vector = 1 if packed else max(1, piece_bytes // element_bytes)
    last_in_vector = (columns % 64) // per_vector * per_vector + per_vector - 1
    return ((tile_row < tile_col) | ((tile_row == tile_col) & (last_in_vector >= rows % 64))).int()


@pytest.mark.parametrize("b,group,images", [(5, 0, 8), (37, 16, 16), (70, 64, 64), (3, 1, 1), (40, 32, 32)])
@pytest.mark.parametrize("c", [70, 130, 132])
def test_simulated_cuda_reads_each_upper_tile_once_per_image_group(b, group, images, c):
    """The kernel's memory plan (see _copied_per_group), once per group of `images` images (the
    default group: the smallest that holds the batch), also when a position's tiles are dealt
    to several blocks (here 6 positions on 8 resident blocks)."""
    embedding, mean, precision = gaussians(b, c, 2, 3, torch.float32, "cpu", seed=c)
    with copies_from(precision) as counts:
        simulated.mahalanobis(embedding, mean, precision, group=group, streamed=False)
    expected = _copied_per_group(c, images) * -(-b // images)
    assert torch.equal(counts.view(6, c, c), expected.expand(6, c, c))


@pytest.mark.parametrize("b", [4, 40])
def test_simulated_cuda_reads_a_packed_triangle_once(b):
    """Packed precisions hold no lower triangle: small groups read each entry once; groups of
    32 or more copy a diagonal tile's lower half from the upper entries again (from cache on a
    GPU, as the tile has just read them)."""
    c = 130
    embedding, mean, precision = gaussians(b, c, 2, 3, torch.float32, "cpu", seed=1)
    rows, columns = torch.triu_indices(c, c)
    with copies_from(packed := precision[:, rows, columns].contiguous()) as counts:
        out = simulated.mahalanobis(embedding, mean, packed)
    torch.testing.assert_close(out, simulated.mahalanobis(embedding, mean, precision), rtol=1e-5, atol=1e-5)
    mirrored = (rows // 64 == columns // 64) & (rows != columns) & (b > 16)
    assert torch.equal(counts.view(6, -1), (1 + mirrored.int()).expand(6, -1))


# Groups of up to 32 float32 images with (position, group) pairs enough to fill the device (2 per
# simulated SM: 8) stream the matrices' rows into registers instead of staging tiles: 4 columns
# a lane (strips of 128) up to 8 images, 2 columns (strips of 64) for 16 and 32.
STREAMED_SHAPES = [(1, 1), (1, 5), (3, 127), (4, 128), (5, 129), (8, 300), (2, 550), (7, 260),
                   (12, 63), (16, 64), (20, 65), (32, 130), (25, 3)]


@pytest.mark.parametrize("b,c", STREAMED_SHAPES)
@pytest.mark.parametrize("layout", ["full", "unaligned", "packed"])
def test_simulated_cuda_streamed_small_groups_match_the_reference(b, c, layout):
    embedding, mean, precision = gaussians(b, c, 3, 4, torch.float32, "cpu", seed=b * 7 + c)
    if layout == "unaligned":  # rows off the 16-byte grid: entry by entry
        precision = torch.empty(precision.numel() + 1)[1:].view_as(precision).copy_(precision)
    elif layout == "packed":
        rows, columns = torch.triu_indices(c, c)
        precision = precision[:, rows, columns].contiguous()
    _check_simulated(embedding, mean, precision)
    tiled = simulated.mahalanobis(embedding, mean, precision, streamed=False)
    torch.testing.assert_close(simulated.mahalanobis(embedding, mean, precision), tiled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b,images", [(1, 1), (3, 4), (8, 8), (9, 8), (6, 1), (16, 16), (20, 32), (40, 32)])
@pytest.mark.parametrize("c", [130, 132, 300])  # rows 16-byte aligned at 132 and 300, 8-byte at 130
@pytest.mark.parametrize("packed", [False, True])
def test_simulated_cuda_streamed_groups_read_the_upper_triangle_once(b, images, c, packed):
    """Each entry on or above the diagonal once per group of `images` images, and none below it
    (16-byte loads only for four entries all on or above it)."""
    embedding, mean, precision = gaussians(b, c, 3, 4, torch.float32, "cpu", seed=c)
    rows, columns = torch.triu_indices(c, c)
    watched = precision[:, rows, columns].contiguous() if packed else precision
    with copies_from(watched) as counts:
        out = simulated.mahalanobis(embedding, mean, watched, group=images)
    _check_simulated(embedding, mean, precision, group=images)
    torch.testing.assert_close(out, simulated.mahalanobis(embedding, mean, precision, streamed=False), rtol=1e-5, atol=1e-5)
    groups = -(-b // images)
    upper = torch.ones(c, c, dtype=torch.int32).triu()
    expected = torch.full((rows.numel(),), groups, dtype=torch.int32) if packed else upper.flatten() * groups
    assert torch.equal(counts.view(12, -1), expected.expand(12, -1))


@pytest.mark.parametrize("b", [1, 20])  # 4 columns a lane, and 2
@pytest.mark.parametrize("channel", [3, 40, 131])
def test_simulated_cuda_streamed_kernel_combines_infinities_as_the_cpu_kernel(channel, b):
    """With a zero entry above the diagonal, an infinite feature meets 0 * inf in some products
    and not in others: the streamed kernel forms the column sums of the upper triangle, as the
    CPU kernel and the tiled kernel's groups of up to 16 images do, so all give the same +inf or
    NaN. (Groups of 32 and 64 images read whole diagonal tiles and may differ here.)"""
    c = 132
    matrix = 0.1 * torch.ones(c, c) + 0.5 * torch.eye(c)
    matrix[3, 40] = matrix[40, 3] = 0
    precision = matrix.expand(12, c, c).contiguous()
    mean = torch.zeros(c, 12)
    embedding = torch.rand(b, c, 3, 4, generator=torch.Generator().manual_seed(channel)) + 0.1
    embedding[0, channel, 1, 2] = float("inf")
    streamed = simulated.mahalanobis(embedding, mean, precision)
    cpu = ops.mahalanobis(embedding, mean, precision)
    assert torch.equal(streamed.isnan(), cpu.isnan()) and torch.equal(streamed.isinf(), cpu.isinf())
    assert not streamed[0, 0, 1, 2].isfinite()
    if b == 1:
        tiled = simulated.mahalanobis(embedding, mean, precision, streamed=False)
        assert torch.equal(streamed.isnan(), tiled.isnan()) and torch.equal(streamed.isinf(), tiled.isinf())
    finite = streamed.isfinite()
    torch.testing.assert_close(streamed[finite], cpu[finite], rtol=1e-5, atol=1e-5)


def test_simulated_cuda_streamed_nan_and_inf():
    """NaN stays NaN, and an infinite feature against a positive matrix gives +inf: entries left
    of the diagonal are skipped, never multiplied by 0."""
    c = 150
    precision = (0.1 * torch.ones(c, c) + 0.5 * torch.eye(c)).expand(12, c, c).contiguous()
    mean = torch.zeros(c, 12)
    embedding = torch.rand(3, c, 3, 4, generator=torch.Generator().manual_seed(4)) + 0.1
    embedding[0, c - 1, 0, 1] = float("inf")  # the last column of the last strip
    embedding[1, 0, 2, 3] = float("inf")  # the first row
    embedding[2, 70, 1, 1] = float("nan")
    out = simulated.mahalanobis(embedding, mean, precision)
    expected = reference.mahalanobis(embedding, mean, precision)
    assert out[0, 0, 0, 1] == float("inf") and out[1, 0, 2, 3] == float("inf") and torch.isnan(out[2, 0, 1, 1])
    special = torch.zeros_like(out, dtype=torch.bool)
    special[0, 0, 0, 1] = special[1, 0, 2, 3] = special[2, 0, 1, 1] = True
    torch.testing.assert_close(out[~special], expected[~special], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("b", [1, 3, 8, 16, 32])
def test_cuda_streamed_and_tiled_kernels_agree(b, monkeypatch):
    """On a GPU: 64 x 64 positions fill it, so groups of up to 32 images take the streamed kernel;
    ANOMALY_KERNELS_MAHALANOBIS_STREAM=0 keeps them on the tiled one."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    kernel = torch.ops.anomaly_kernels.mahalanobis
    for c in (100, 130):  # rows 16-byte aligned, and not
        embedding, mean, precision = gaussians(b, c, 64, 64, torch.float32, "cuda", seed=b + c)
        rows, columns = torch.triu_indices(c, c, device="cuda")
        layouts = {
            "full": precision,
            "packed": precision[:, rows, columns].contiguous(),
            "4 bytes off": torch.empty(precision.numel() + 1, device="cuda")[1:].view_as(precision).copy_(precision),
        }
        expected = reference.mahalanobis(embedding.cpu().double(), mean.cpu().double(), precision.cpu().double())
        for name, matrices in layouts.items():
            monkeypatch.delenv("ANOMALY_KERNELS_MAHALANOBIS_STREAM", raising=False)
            streamed = kernel(embedding, mean, matrices)
            monkeypatch.setenv("ANOMALY_KERNELS_MAHALANOBIS_STREAM", "0")
            tiled = kernel(embedding, mean, matrices)
            torch.testing.assert_close(streamed, tiled, rtol=1e-5, atol=1e-5, msg=f"C = {c}, {name}")
            torch.testing.assert_close(streamed.cpu().double(), expected, rtol=1e-4, atol=1e-4, msg=f"C = {c}, {name}")

