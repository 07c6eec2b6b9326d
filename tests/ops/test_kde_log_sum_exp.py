"""anomaly_kernels::kde_log_sum_exp beyond the conformance table: stability far from the data,
an explicit numpy sum, infinities and NaN, argument errors."""

import numpy as np
import pytest
import torch

from anomaly_kernels import ops, reference


def test_far_queries_are_finite_where_the_plain_sum_underflows(device):
    dataset = torch.randn(300, 4, device=device)
    queries = torch.full((2, 4), 60.0, device=device)
    out = ops.kde_log_sum_exp(queries, dataset)
    assert torch.isfinite(out).all()
    plain = torch.exp(-0.5 * torch.cdist(queries, dataset).square()).sum(1).log()
    assert torch.isinf(plain).all()  # what a non-stabilised sum gives in float32
    torch.testing.assert_close(out, reference.kde_log_sum_exp(queries.double(), dataset.double()).float())


def test_equals_log_of_explicit_sum_on_small_data():
    dataset = np.random.default_rng(0).normal(size=(50, 3))
    queries = np.random.default_rng(1).normal(size=(4, 3))
    expected = np.log(np.exp(-0.5 * ((queries[:, None, :] - dataset[None]) ** 2).sum(-1)).sum(1))
    out = ops.kde_log_sum_exp(torch.from_numpy(queries), torch.from_numpy(dataset)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "queries,dataset,error,match",
    [
        (torch.randn(3, 4), torch.randn(0, 4), ValueError, "dataset must be a non-empty 2-D"),
        (torch.randn(3, 5), torch.randn(6, 4), ValueError, r"queries must be 2-D \(M, 4\)"),
        (torch.randn(3, 4), torch.randn(6, 4).double(), TypeError, "dataset must be float32"),
        (torch.randn(3, 4).half(), torch.randn(6, 4).half(), TypeError, "queries must be float32"),
    ],
)
def test_bad_arguments_are_named(queries, dataset, error, match):
    with pytest.raises(error, match=match):
        ops.kde_log_sum_exp(queries, dataset)


def test_infinite_and_nan_distances_match_the_reference(device):
    """A squared distance that overflows float32 adds exactly nothing; a NaN makes the result NaN,
    as in the reference (no row's contribution may be dropped silently)."""
    dataset = torch.tensor([[3e19], [0.0]], device=device)
    out = ops.kde_log_sum_exp(torch.tensor([[0.0], [1.0]], device=device), dataset)
    torch.testing.assert_close(out, reference.kde_log_sum_exp(torch.tensor([[0.0], [1.0]], device=device), dataset))
    assert torch.isfinite(out).all()
    assert torch.isnan(ops.kde_log_sum_exp(torch.tensor([[float("nan")]], device=device), dataset)).all()
    # A NaN training row among thousands (several chunks of rows on CUDA) reaches every query.
    many = torch.randn(5000, 4, device=device)
    many[0, 0] = float("nan")
    assert torch.isnan(ops.kde_log_sum_exp(torch.randn(3, 4, device=device), many)).all()


@pytest.mark.parametrize("rows", [3, 600, 1500])  # within one tile of rows, and over several
def test_a_query_whose_every_distance_overflows_has_log_density_minus_inf(device, rows):
    """No finite term at all: -inf, as the reference gives, not the NaN of exp(-inf - -inf); a NaN
    distance among the overflowing ones still makes the result NaN."""
    dataset = torch.randn(rows, 2, device=device)
    queries = torch.tensor([[3e19, 0.0], [0.0, 0.0]], device=device)
    out = ops.kde_log_sum_exp(queries, dataset)
    expected = reference.kde_log_sum_exp(queries, dataset)
    assert out[0].item() == float("-inf") and expected[0].item() == float("-inf")
    torch.testing.assert_close(out, expected)
    dataset[rows // 2, 1] = float("nan")
    assert torch.isnan(ops.kde_log_sum_exp(queries, dataset)).all()
