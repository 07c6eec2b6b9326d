"""anomaly_kernels::kcenter_step_ and kcenter_step_to_ beyond the conformance table: float rows
(rounding near ties), hand-checked ties, the int / tensor center, argument errors, CUDA edges."""

import pytest
import torch
from cuda_sim import operators as simulated

from anomaly_kernels import ops, reference


def _dtypes(device):
    return [torch.float32] if device == "cuda" else [torch.float32, torch.float64]


def _random_case(n, d, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    min_distances = (torch.rand(n, generator=g, dtype=torch.float64) * 2 * d**0.5).to(dtype=dtype, device=device)
    center = int(torch.randint(n, (1,), generator=g))
    return features, min_distances, center


@pytest.mark.parametrize("n,d", [(1, 1), (1, 7), (2, 3), (33, 1), (257, 31), (1000, 300), (4099, 64)])
def test_matches_reference_on_random_data(device, n, d):
    for dtype in _dtypes(device):
        features, min_distances, center = _random_case(n, d, dtype, device, seed=n * 131 + d)
        expected_distances = min_distances.clone()
        expected_index = reference.kcenter_step_(features, expected_distances, center)
        index = ops.kcenter_step_(features, min_distances, center)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(min_distances, expected_distances, rtol=tol, atol=tol)
        # The argmax of the kernel's own distances must be exact, and must agree with the
        # reference wherever the top two distances are not within rounding of each other.
        assert int(index) == int(torch.argmax(min_distances))
        top2 = torch.topk(expected_distances, min(2, n)).values
        if n == 1 or (top2[0] - top2[1]) > 1e-4 * top2[0]:
            assert int(index) == int(expected_index)
        assert index.dtype == torch.int64 and index.dim() == 0 and index.device == features.device


def test_integer_data_is_exact_and_ties_go_to_smallest_index(device):
    # Rows 1, 3 and 5 are all at distance 5 from row 0: the smallest index must win.
    features = torch.tensor(
        [[0, 0], [3, 4], [1, 0], [4, 3], [0, 1], [-5, 0]], dtype=torch.float32, device=device
    )
    min_distances = torch.full((6,), float("inf"), device=device)
    index = ops.kcenter_step_(features, min_distances, 0)
    assert int(index) == 1
    assert min_distances.tolist() == [0.0, 5.0, 1.0, 5.0, 1.0, 5.0]
    # A second step keeps the running minimum: the distance to row 1 only lowers what it beats.
    index = ops.kcenter_step_(features, min_distances, 1)
    assert min_distances.tolist() == [0.0, 0.0, 1.0, torch.tensor(2.0).sqrt().item(), 1.0, 5.0]
    assert int(index) == 5


def test_center_as_device_tensor(device):
    features = torch.randn(64, 5, device=device)
    a = torch.full((64,), float("inf"), device=device)
    b = a.clone()
    i1 = ops.kcenter_step_(features, a, 10)
    i2 = ops.kcenter_step_(features, b, torch.tensor(10, device=device))
    assert torch.equal(a, b) and int(i1) == int(i2)


@pytest.mark.parametrize(
    "features,min_distances,center,error,match",
    [
        (torch.randn(5), torch.zeros(5), 0, ValueError, "features must be 2-D"),
        (torch.randn(0, 3), torch.zeros(0), 0, ValueError, "at least one row"),
        (torch.randn(5, 3).int(), torch.zeros(5), 0, TypeError, "features must be float32 or float64"),
        (torch.randn(5, 3), torch.zeros(4), 0, ValueError, r"min_distances must have shape \(5,\)"),
        (torch.randn(5, 3), torch.zeros(5, dtype=torch.float64), 0, TypeError, "min_distances must be float32"),
        (torch.randn(5, 3), torch.zeros(5), 5, ValueError, r"center must be a row index in \[0, 5\)"),
        (torch.randn(5, 3), torch.zeros(5), -1, ValueError, "center must be a row index"),
        (torch.randn(5, 3), torch.zeros(5), torch.tensor([1, 2]), ValueError, "center must be one int64 index"),
    ],
)
def test_bad_arguments_are_named(features, min_distances, center, error, match):
    with pytest.raises(error, match=match):
        ops.kcenter_step_(features, min_distances, center)


def test_native_checks_guard_direct_dispatcher_calls():
    with pytest.raises(RuntimeError, match="center must index a row"):
        torch.ops.anomaly_kernels.kcenter_step_(torch.randn(4, 2), torch.zeros(4), torch.tensor(9))
    with pytest.raises(RuntimeError, match="min_distances must be contiguous"):
        torch.ops.anomaly_kernels.kcenter_step_(torch.randn(4, 2), torch.zeros(8)[::2], torch.tensor(1))


def test_step_to_a_row_vector_equals_step_to_that_row(device):
    for dtype in _dtypes(device):
        features, min_distances, center = _random_case(500, 33, dtype, device, seed=5)
        by_index, by_row = min_distances.clone(), min_distances.clone()
        i1 = ops.kcenter_step_(features, by_index, center)
        i2 = ops.kcenter_step_to_(features, by_row, features[center].clone())
        assert torch.equal(by_index, by_row) and int(i1) == int(i2)


def test_step_to_bad_center_row():
    with pytest.raises(ValueError, match=r"center_row must have shape \(3,\)"):
        ops.kcenter_step_to_(torch.randn(5, 3), torch.zeros(5), torch.zeros(4))
    with pytest.raises(TypeError, match="center_row must be float32"):
        ops.kcenter_step_to_(torch.randn(5, 3), torch.zeros(5), torch.zeros(3, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_out_of_range_tensor_center_returns_minus_one_and_changes_nothing():
    features = torch.randn(100, 8, device="cuda")
    min_distances = torch.rand(100, device="cuda")
    before = min_distances.clone()
    for center in (100, -1):
        index = ops.kcenter_step_(features, min_distances, torch.tensor(center, device="cuda"))
        assert int(index) == -1
        assert torch.equal(min_distances, before)
    # A valid center afterwards works as usual (the scratch state was not left dirty).
    index = ops.kcenter_step_(features, min_distances, torch.tensor(3, device="cuda"))
    assert int(index) == int(torch.argmax(min_distances)) and min_distances[3] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("n,d", [(300000, 8), (70001, 5), (4096, 304)])
def test_cuda_step_at_grid_and_load_edges(n, d):
    g = torch.Generator().manual_seed(n + d)
    features = torch.randint(-100, 101, (n, d), generator=g).float()
    min_distances = torch.full((n,), float("inf"))
    expected = min_distances.clone()
    ref_index = ops.kcenter_step_(features, expected, 17)
    on_gpu = min_distances.cuda()
    index = ops.kcenter_step_(features.cuda(), on_gpu, 17)
    assert torch.equal(on_gpu.cpu(), expected) and int(index) == int(ref_index)


# The CUDA kernel on the CPU simulation of the kernels (tests/cuda_sim), on every machine.
def test_simulated_cuda_out_of_range_center_returns_minus_one_and_changes_nothing():
    features, min_distances = torch.randn(100, 8), torch.rand(100)
    before = min_distances.clone()
    for center in (100, -1):
        assert int(simulated.kcenter_step_(features, min_distances, center)) == -1
        assert torch.equal(min_distances, before)
    index = simulated.kcenter_step_(features, min_distances, 3)
    assert int(index) == int(torch.argmax(min_distances)) and min_distances[3] == 0


@pytest.mark.parametrize("n,d", [(70001, 5), (4096, 304), (3000, 1)])
def test_simulated_cuda_step_at_grid_and_load_edges(n, d):
    g = torch.Generator().manual_seed(n + d)
    features = torch.randint(-100, 101, (n, d), generator=g).float()
    expected, simulated_distances = torch.full((n,), float("inf")), torch.full((n,), float("inf"))
    ref_index = ops.kcenter_step_(features, expected, 17)
    index = simulated.kcenter_step_(features, simulated_distances, 17)
    assert torch.equal(simulated_distances, expected) and int(index) == int(ref_index)
