"""anomaly_kernels::kcenter_greedy_ (the whole selection loop) beyond the conformance table:
float rows, pruning and chunking invariance, argument errors, the CUDA paths."""

import functools

import pytest
import torch
from cuda_sim import operators as simulated
from cuda_sim.kernels import Device

from anomaly_kernels import ops, reference


def _state(n, k, start, device):
    centers = torch.zeros(k, dtype=torch.int64, device=device)
    centers[0] = start
    return (
        torch.full((n,), float("inf"), device=device),
        torch.full((n,), -1, dtype=torch.int32, device=device),
        centers,
    )


def _clustered(n, d, clusters, seed, device):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(clusters, d, generator=g) * 20
    labels = torch.randint(clusters, (n,), generator=g)
    return (means[labels] + 0.3 * torch.randn(n, d, generator=g)).to(device)


def _run(fn, features, k, start, prune, chunks=(None,)):
    n = features.shape[0]
    min_distances, nearest, centers = _state(n, k, start, features.device)
    bounds = [0] + [c for c in chunks if c is not None] + [k - 1]
    for begin, end in zip(bounds[:-1], bounds[1:]):
        fn(features, min_distances, nearest, centers, begin, end, True, prune)
    fn(features, min_distances, nearest, centers, k - 1, k, False, prune)
    return centers, min_distances, nearest


@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (2, 3, 2), (5, 4, 5), (1000, 32, 40), (5000, 300, 30)])
def test_random_data_matches_reference(device, n, d, k):
    features = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d), device="cpu").to(device)
    native = _run(ops.kcenter_greedy_, features, k, 0, True)
    expected = _run(reference.kcenter_greedy_, features, k, 0, False)
    assert torch.equal(native[0], expected[0])
    torch.testing.assert_close(native[1], expected[1], rtol=1e-5, atol=1e-5)


def test_pruning_and_chunking_do_not_change_the_selection(device):
    features = _clustered(6000, 48, clusters=64, seed=1, device=device)
    plain = _run(ops.kcenter_greedy_, features, 200, 17, prune=False)
    pruned = _run(ops.kcenter_greedy_, features, 200, 17, prune=True)
    chunked = _run(ops.kcenter_greedy_, features, 200, 17, prune=True, chunks=(1, 7, 150))
    assert torch.equal(plain[0], pruned[0]) and torch.equal(plain[0], chunked[0])
    assert torch.equal(plain[1], pruned[1]) and torch.equal(plain[1], chunked[1])


def test_pruning_that_switches_between_row_and_group_passes(device):
    """A wide iid blob next to many tight, far clusters: passes with a center in a tight cluster
    reach few rows (the CPU kernel then prunes whole groups of rows sharing a nearest center),
    passes with a center in the blob reach most rows (it falls back to reading rows in order).
    The selection and the distances must stay those of the brute-force passes throughout."""
    g = torch.Generator().manual_seed(0)
    blob = torch.randn(5000, 16, generator=g)
    tight = (torch.randn(100, 16, generator=g) * 100).repeat_interleave(10, 0) + 0.01 * torch.randn(1000, 16, generator=g)
    features = torch.cat([blob, tight])[torch.randperm(6000, generator=g)].to(device)
    plain = _run(ops.kcenter_greedy_, features, 400, 5, prune=False)
    pruned = _run(ops.kcenter_greedy_, features, 400, 5, prune=True)
    chunked = _run(ops.kcenter_greedy_, features, 400, 5, prune=True, chunks=(70, 80, 300))
    for run in (pruned, chunked):
        assert torch.equal(plain[0], run[0]) and torch.equal(plain[1], run[1])
        # The recorded nearest center is at the recorded distance.
        dist_to_recorded = torch.linalg.vector_norm(features - features[run[0][run[2].long()]], dim=1)
        torch.testing.assert_close(dist_to_recorded, run[1], rtol=1e-5, atol=1e-5)


def test_apply_only_passes_leave_centers_alone(device):
    features = torch.randn(100, 5, device=device)
    min_distances, nearest, centers = _state(100, 3, 0, device)
    centers[1], centers[2] = 10, 20
    ops.kcenter_greedy_(features, min_distances, nearest, centers, 0, 3, pick=False)
    assert centers.tolist() == [0, 10, 20]
    expected = torch.stack([torch.linalg.vector_norm(features - features[c], dim=1) for c in (0, 10, 20)]).amin(0)
    torch.testing.assert_close(min_distances, expected)
    assert set(nearest.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(features=torch.randn(10, 3).double()), TypeError, "features must be float32"),
        (dict(features=torch.randn(10)), ValueError, "features must be a non-empty 2-D"),
        (dict(min_distances=torch.zeros(9)), ValueError, r"min_distances must be a contiguous float32 tensor of shape \(10,\)"),
        (dict(nearest=torch.zeros(10, dtype=torch.int64)), ValueError, "nearest must be a contiguous int32"),
        (dict(centers=torch.zeros(4, dtype=torch.int32)), ValueError, "centers must be a contiguous 1-D int64"),
        (dict(end=4), ValueError, "begin and end must satisfy"),
        (dict(begin=3, end=2), ValueError, "begin and end must satisfy"),
    ],
)
def test_bad_arguments_are_named(change, error, match):
    args = dict(
        features=torch.randn(10, 3), min_distances=torch.full((10,), float("inf")),
        nearest=torch.full((10,), -1, dtype=torch.int32), centers=torch.zeros(4, dtype=torch.int64),
        begin=0, end=3,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        ops.kcenter_greedy_(**args)


def test_native_check_of_center_values():
    centers = torch.tensor([0, 99, 0, 0])
    with pytest.raises(RuntimeError, match=r"centers\[1\] must index a row"):
        torch.ops.anomaly_kernels.kcenter_greedy_(
            torch.randn(10, 3), torch.full((10,), float("inf")), torch.full((10,), -1, dtype=torch.int32),
            centers, 0, 2, False, True,
        )


@pytest.mark.parametrize("prune", [False, True])
def test_bfloat16_features_equal_the_reference_on_the_rounded_rows(device, prune):
    features = _clustered(3000, 40, clusters=16, seed=9, device=device).to(torch.bfloat16)
    native = _run(ops.kcenter_greedy_, features, 50, 5, prune)
    expected = _run(reference.kcenter_greedy_, features, 50, 5, False)
    assert torch.equal(native[0], expected[0])
    torch.testing.assert_close(native[1], expected[1], rtol=1e-5, atol=1e-5)


def test_begin_and_end_must_be_ints():
    features = torch.randn(10, 3)
    min_distances, nearest, centers = _state(10, 4, 0, "cpu")
    with pytest.raises(TypeError, match="begin must be an int"):
        ops.kcenter_greedy_(features, min_distances, nearest, centers, 0.0, 2)
    with pytest.raises(TypeError, match="end must be an int"):
        ops.kcenter_greedy_(features, min_distances, nearest, centers, 0, True)


# CUDA paths. Integer-valued rows make every distance exact in float32 and bfloat16 (squared
# sums below 2^24), so CUDA and CPU must agree bit for bit, ties included.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
PATHS = ["cooperative", "per-pass"]


@pytest.fixture
def cuda_path(request, monkeypatch):
    if request.param == "per-pass":
        monkeypatch.setenv("ANOMALY_KERNELS_KCENTER_NO_COOPERATIVE", "1")
    else:
        monkeypatch.delenv("ANOMALY_KERNELS_KCENTER_NO_COOPERATIVE", raising=False)
    return request.param


def _integer_rows(n, d, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-100, 101, (n, d), generator=g).to(dtype)


# (n, d, k) where the CUDA paths change: a single row; fewer rows than blocks, rows not 16-byte
# multiples; scalar loads (28-byte rows); the projected PatchCore width (16-byte loads); more rows
# than threads in the cooperative grid (an H200's 132 SMs x 2 x 512 threads, or the simulated
# device's 2 x 512).
GPU_EDGE_SIZES = [(1, 1, 1), (5, 3, 5), (3000, 7, 64), (20000, 304, 40), (300000, 8, 24)]
SIMULATED_EDGE_SIZES = [(1, 1, 1), (5, 3, 5), (3000, 7, 40), (4000, 304, 12), (2049, 8, 10)]


@requires_cuda
@pytest.mark.parametrize("cuda_path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("n,d,k", GPU_EDGE_SIZES)
def test_cuda_equals_cpu_kernel(cuda_path, dtype, prune, n, d, k):
    features = _integer_rows(n, d, seed=n + d, dtype=dtype)
    expected = _run(ops.kcenter_greedy_, features, k, n // 2, prune)
    native = _run(ops.kcenter_greedy_, features.cuda(), k, n // 2, prune)
    assert torch.equal(native[0].cpu(), expected[0])
    assert torch.equal(native[1].cpu(), expected[1])


@requires_cuda
@pytest.mark.parametrize("cuda_path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_clustered_rows_pruned_chunked_equal_one_unpruned_call(cuda_path, dtype):
    # Many tight clusters: after the first centers most rows are pruned, and pruning pauses
    # and resumes; chunk bounds must not change anything.
    features = _clustered(40000, 48, clusters=300, seed=3, device="cuda").to(dtype)
    plain = _run(ops.kcenter_greedy_, features, 600, 11, prune=False)
    pruned = _run(ops.kcenter_greedy_, features, 600, 11, prune=True)
    chunked = _run(ops.kcenter_greedy_, features, 600, 11, prune=True, chunks=(1, 2, 90, 91, 400))
    for run in (pruned, chunked):
        assert torch.equal(plain[0], run[0]) and torch.equal(plain[1], run[1])
    expected = _run(reference.kcenter_greedy_, features, 600, 11, prune=False)
    assert torch.equal(plain[0], expected[0])


@requires_cuda
@pytest.mark.parametrize("triangle_bytes", [None, "200000", "4096", "0"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_bounded_passes_select_what_exact_passes_select(monkeypatch, triangle_bytes, dtype):
    # Clustered rows: once every cluster holds a center, most pruned passes bound their
    # center's distances with the kept center-to-center triangle instead of computing them.
    # The default budget keeps the whole triangle; 200,000 bytes end it mid-selection (rows
    # past ~316 exact again); 4096 bytes leave it a few rows; 0 turns the bounded form off.
    # Chunked calls start a new triangle at each chunk.
    features = _clustered(40000, 48, clusters=300, seed=5, device="cuda").to(dtype)
    plain = _run(ops.kcenter_greedy_, features, 600, 11, prune=False)
    if triangle_bytes is None:
        monkeypatch.delenv("ANOMALY_KERNELS_KCENTER_TRIANGLE_BYTES", raising=False)
    else:
        monkeypatch.setenv("ANOMALY_KERNELS_KCENTER_TRIANGLE_BYTES", triangle_bytes)
    for chunks in [(None,), (1, 2, 90, 91, 400)]:
        bounded = _run(ops.kcenter_greedy_, features, 600, 11, prune=True, chunks=chunks)
        assert torch.equal(plain[0], bounded[0]), f"chunks {chunks}"
        assert torch.equal(plain[1], bounded[1]), f"chunks {chunks}"


@requires_cuda
def test_cuda_selection_without_room_for_the_triangle():
    # The triangle (4000 centers: 32 MB) is an optional speed-up: when the device cannot hold
    # it, the passes run in the exact form instead of failing.
    features = _clustered(100_000, 32, clusters=300, seed=7, device="cuda")
    plain = _run(ops.kcenter_greedy_, features, 4000, 1, prune=False)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + (8 << 20)) / total)
    try:
        pruned = _run(ops.kcenter_greedy_, features, 4000, 1, prune=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert torch.equal(plain[0], pruned[0]) and torch.equal(plain[1], pruned[1])


@requires_cuda
@pytest.mark.parametrize("blocks_per_sm", ["1", "2"])
def test_cuda_bounded_passes_with_integer_ties(monkeypatch, blocks_per_sm):
    # Integer rows in few dimensions: exact distances and many equal ones, so bounds meet
    # their margins exactly and ties decide the winner; other grid sizes move the block
    # boundaries that the winner's nearest center is read from.
    monkeypatch.setenv("ANOMALY_KERNELS_KCENTER_BLOCKS_PER_SM", blocks_per_sm)
    g = torch.Generator().manual_seed(9)
    features = torch.randint(-3, 4, (30000, 6), generator=g).float().cuda()
    plain = _run(ops.kcenter_greedy_, features, 500, 3, prune=False)
    bounded = _run(ops.kcenter_greedy_, features, 500, 3, prune=True, chunks=(5, 250))
    expected = _run(reference.kcenter_greedy_, features.cpu(), 500, 3, prune=False)
    assert torch.equal(plain[0].cpu(), expected[0]) and torch.equal(bounded[0], plain[0])
    assert torch.equal(bounded[1], plain[1])


@requires_cuda
@pytest.mark.parametrize("cuda_path", PATHS, indirect=True)
@pytest.mark.parametrize("pick", [False, True])
def test_cuda_out_of_range_center_raises(cuda_path, pick):
    features = torch.randn(1000, 16, device="cuda")
    min_distances, nearest, centers = _state(1000, 6, 0, "cuda")
    centers[2] = 1000 if pick else -1
    ops.kcenter_greedy_(features, min_distances, nearest, centers, 0, 2, pick=False)
    with pytest.raises(RuntimeError, match=r"centers\[2\] must index a row of features"):
        ops.kcenter_greedy_(features, min_distances, nearest, centers, 2, 4, pick=pick)


@requires_cuda
@pytest.mark.parametrize("cuda_path", PATHS, indirect=True)
def test_cuda_out_of_range_nearest_raises(cuda_path):
    features = torch.randn(1000, 16, device="cuda")
    min_distances, nearest, centers = _state(1000, 6, 0, "cuda")
    ops.kcenter_greedy_(features, min_distances, nearest, centers, 0, 2, pick=True)
    nearest[123] = 7
    with pytest.raises(RuntimeError, match=r"nearest\[123\] must be -1 or a coreset position"):
        ops.kcenter_greedy_(features, min_distances, nearest, centers, 2, 4, pick=True, prune=True)


@requires_cuda
def test_cuda_cooperative_and_per_pass_agree_on_random_rows(monkeypatch):
    features = torch.randn(50000, 96, generator=torch.Generator().manual_seed(4)).cuda()
    cooperative = _run(ops.kcenter_greedy_, features, 200, 0, True)
    monkeypatch.setenv("ANOMALY_KERNELS_KCENTER_NO_COOPERATIVE", "1")
    per_pass = _run(ops.kcenter_greedy_, features, 200, 0, True)
    assert torch.equal(cooperative[0], per_pass[0]) and torch.equal(cooperative[1], per_pass[1])


# The same CUDA paths on the CPU simulation of the kernels (tests/cuda_sim), so that every
# machine runs them: a simulated device of one multiprocessor holding 2 blocks of 512 threads
# (the simulation's cost grows with the threads it switches between), at sizes it runs in
# seconds.
TWO_BLOCKS = Device(sms=1, blocks_per_sm=2)


def _simulated(path, device=TWO_BLOCKS, **launch):
    return functools.partial(simulated.kcenter_greedy_, cooperative=path == "cooperative", device=device, **launch)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("n,d,k", SIMULATED_EDGE_SIZES)
def test_simulated_cuda_equals_cpu_kernel(path, dtype, prune, n, d, k):
    features = _integer_rows(n, d, seed=n + d, dtype=dtype)
    expected = _run(ops.kcenter_greedy_, features, k, n // 2, prune)
    native = _run(_simulated(path), features, k, n // 2, prune)
    assert torch.equal(native[0], expected[0])
    assert torch.equal(native[1], expected[1])


@pytest.mark.parametrize(
    "triangle_bytes,dtype",
    [(-1, torch.float32), (-1, torch.bfloat16), (20000, torch.float32), (4096, torch.float32), (0, torch.float32)],
)
def test_simulated_cuda_bounded_passes_select_what_exact_passes_select(triangle_bytes, dtype):
    # As test_cuda_bounded_passes_select_what_exact_passes_select: -1 keeps the whole triangle,
    # 20,000 bytes end it mid-selection, 4096 leave it a few rows, 0 turns the bounded form off.
    features = _clustered(4000, 16, clusters=100, seed=5, device="cpu").to(dtype)
    plain = _run(_simulated("cooperative"), features, 250, 11, prune=False)
    for chunks in [(None,), (1, 2, 60, 61, 200)]:
        bounded = _run(_simulated("cooperative", triangle_bytes=triangle_bytes), features, 250, 11, True, chunks)
        assert torch.equal(plain[0], bounded[0]), f"chunks {chunks}"
        assert torch.equal(plain[1], bounded[1]), f"chunks {chunks}"
        assert torch.equal(plain[2], bounded[2]), f"chunks {chunks}"
    expected = _run(reference.kcenter_greedy_, features, 250, 11, prune=False)
    assert torch.equal(plain[0], expected[0])


@pytest.mark.parametrize("blocks_per_sm", [1, 2])
def test_simulated_cuda_bounded_passes_with_integer_ties(blocks_per_sm):
    # Three multiprocessors: 3 or 6 blocks, so the winner's nearest center is read from
    # another block's star slot.
    g = torch.Generator().manual_seed(9)
    features = torch.randint(-3, 4, (5000, 6), generator=g).float()
    three_sms = Device(sms=3, blocks_per_sm=2)
    plain = _run(_simulated("cooperative", three_sms), features, 150, 3, prune=False)
    bounded = _run(
        _simulated("cooperative", three_sms, max_blocks_per_sm=blocks_per_sm), features, 150, 3, True, (5, 100)
    )
    expected = _run(reference.kcenter_greedy_, features, 150, 3, prune=False)
    assert torch.equal(plain[0], expected[0]) and torch.equal(bounded[0], plain[0])
    assert torch.equal(bounded[1], plain[1])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pick", [False, True])
def test_simulated_cuda_reports_an_out_of_range_center(path, pick):
    features = torch.randn(1000, 16, generator=torch.Generator().manual_seed(2))
    min_distances, nearest, centers = _state(1000, 6, 0, "cpu")
    centers[2] = 1000 if pick else -1
    select = _simulated(path)
    select(features, min_distances, nearest, centers, 0, 2, False, True)
    with pytest.raises(ValueError, match=r"device error 1 at 2 \(value " + str(int(centers[2])) + r"\)"):
        select(features, min_distances, nearest, centers, 2, 4, pick, True)


@pytest.mark.parametrize("path", PATHS)
def test_simulated_cuda_reports_an_out_of_range_nearest(path):
    features = torch.randn(1000, 16, generator=torch.Generator().manual_seed(3))
    min_distances, nearest, centers = _state(1000, 6, 0, "cpu")
    select = _simulated(path)
    select(features, min_distances, nearest, centers, 0, 2, True, True)
    nearest[123] = 7
    with pytest.raises(ValueError, match=r"device error 2 at 123 \(value 7\)"):
        select(features, min_distances, nearest, centers, 2, 4, True, True)
