"""Chunked exact k-NN search against scipy's float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from anomaly_kernels.components.search import nearest_neighbors


def random_rows(seed: int, rows: int, dims: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dims, generator=generator)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, None])
def test_nearest_neighbor_matches_brute_force(chunk_size):
    queries, bank = random_rows(0, 150), random_rows(1, 90)
    distances, indices = nearest_neighbors(queries, bank, k=1, chunk_size=chunk_size)
    reference = cdist(queries.double().numpy(), bank.double().numpy())
    assert distances.shape == (150, 1) and indices.shape == (150, 1) and indices.dtype == torch.int64
    np.testing.assert_array_equal(indices[:, 0].numpy(), reference.argmin(axis=1))
    np.testing.assert_allclose(distances[:, 0].numpy(), reference.min(axis=1), rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 13, None])
def test_k_nearest_neighbors_sorted_and_match_brute_force(chunk_size):
    queries, bank = random_rows(2, 60), random_rows(3, 40)
    distances, indices = nearest_neighbors(queries, bank, k=5, chunk_size=chunk_size)
    reference = cdist(queries.double().numpy(), bank.double().numpy())
    expected_indices = np.argsort(reference, axis=1)[:, :5]
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_allclose(distances.numpy(), np.sort(reference, axis=1)[:, :5], rtol=1e-5)
    assert (distances[:, 1:] >= distances[:, :-1]).all()


def test_chunked_equals_unchunked_exactly():
    queries, bank = random_rows(4, 200, dims=32), random_rows(5, 120, dims=32)
    whole = nearest_neighbors(queries, bank, k=3, chunk_size=200)
    for chunk_size in (1, 9, 50):
        chunked = nearest_neighbors(queries, bank, k=3, chunk_size=chunk_size)
        assert torch.equal(chunked[0], whole[0]) and torch.equal(chunked[1], whole[1])


def test_distances_are_exact_for_far_away_duplicates():
    # Rows with norms ~1e3: |q|² + |b|² − 2q·b cancels to rounding noise of ~0.1, the direct
    # recomputation gives exact zeros for the duplicates and exact small distances otherwise.
    bank = random_rows(6, 50) + 1000.0
    queries = torch.cat([bank[[3, 17]], bank[[8]] + torch.tensor([0.01] + [0.0] * 11)])
    distances, indices = nearest_neighbors(queries, bank)
    assert indices[:, 0].tolist() == [3, 17, 8]
    assert distances[0, 0] == 0.0 and distances[1, 0] == 0.0
    assert distances[2, 0].item() == pytest.approx(0.01, rel=1e-3)


def test_ties_go_to_the_smallest_index():
    bank = torch.tensor([[3.0, 4.0], [1.0, 2.0], [5.0, 5.0], [1.0, 2.0]])
    distances, indices = nearest_neighbors(torch.tensor([[1.0, 2.0]]), bank)
    assert indices.item() == 1 and distances.item() == 0.0


def test_inputs_are_not_modified():
    queries, bank = random_rows(7, 20), random_rows(8, 10)
    queries_copy, bank_copy = queries.clone(), bank.clone()
    nearest_neighbors(queries, bank, k=2, chunk_size=3)
    assert torch.equal(queries, queries_copy) and torch.equal(bank, bank_copy)


def test_float64_inputs_keep_their_dtype():
    distances, _ = nearest_neighbors(random_rows(9, 5).double(), random_rows(10, 4).double())
    assert distances.dtype == torch.float64


def test_empty_queries_give_empty_results():
    distances, indices = nearest_neighbors(torch.empty(0, 12), random_rows(11, 4), k=2)
    assert distances.shape == (0, 2) and indices.shape == (0, 2)


@pytest.mark.parametrize(
    "queries, bank, options, error, message",
    [
        (torch.zeros(3, 4), torch.zeros(0, 4), {}, ValueError, "bank must hold at least one row"),
        (torch.zeros(3, 4), torch.zeros(5, 3), {}, ValueError, "same number of columns"),
        (torch.zeros(3, 4), torch.zeros(5, 4).double(), {}, TypeError, "share a dtype"),
        (torch.zeros(3, 4), torch.zeros(5, 4), {"k": 6}, ValueError, "k must be an int in \\[1, 5\\]"),
        (torch.zeros(3, 4), torch.zeros(5, 4), {"k": 0}, ValueError, "k must be"),
        (torch.zeros(3, 4), torch.zeros(5, 4), {"chunk_size": 0}, ValueError, "chunk_size"),
        (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(5, 4), {}, TypeError, "queries must be a floating"),
        (torch.zeros(4), torch.zeros(5, 4), {}, ValueError, "queries must be 2-D"),
        (torch.full((3, 4), float("nan")), torch.zeros(5, 4), {}, ValueError, "queries must contain only finite"),
        (torch.zeros(3, 4), torch.full((5, 4), float("inf")), {}, ValueError, "bank must contain only finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(queries, bank, options, error, message):
    with pytest.raises(error, match=message):
        nearest_neighbors(queries, bank, **options)
