"""SparseRandomProjection: Johnson-Lindenstrauss sizing, the sparse pattern's distribution, the product."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.random_projection import johnson_lindenstrauss_min_dim as sklearn_min_dim

from anomaly_kernels.components.dimensionality_reduction import NotFittedError, SparseRandomProjection
from anomaly_kernels.components.dimensionality_reduction.random_projection import johnson_lindenstrauss_min_dim


def dense_from_csr(projection: SparseRandomProjection) -> np.ndarray:
    """Rebuild R (n_components, n_features) from the stored CSR arrays with plain numpy."""
    crow = projection.crow_indices.numpy()
    cols = projection.col_indices.numpy()
    signs = projection.signs.numpy().astype(np.float64)
    matrix = np.zeros((projection.n_components, projection.n_features))
    for row in range(projection.n_components):
        matrix[row, cols[crow[row] : crow[row + 1]]] = signs[crow[row] : crow[row + 1]] * projection.scale
    return matrix


def fitted(num_samples: int, num_features: int, eps: float = 0.6, random_state: int | None = 0):
    return SparseRandomProjection(eps=eps, random_state=random_state).fit(torch.empty(num_samples, num_features))


@pytest.mark.parametrize(("n_samples", "expected"), [(1000, 170), (50_000, 267), (219_520, 303)])
def test_johnson_lindenstrauss_documented_values(n_samples: int, expected: int) -> None:
    assert johnson_lindenstrauss_min_dim(n_samples, eps=0.9) == expected
    assert SparseRandomProjection().johnson_lindenstrauss_min_dim(n_samples, eps=0.9) == expected


@pytest.mark.parametrize("n_samples", [1, 2, 10, 1000, 123_457, 10**7])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5, 0.9, 0.99])
def test_johnson_lindenstrauss_matches_sklearn(n_samples: int, eps: float) -> None:
    expected = int(sklearn_min_dim(n_samples, eps=eps))
    assert johnson_lindenstrauss_min_dim(n_samples, eps) == expected
    assert SparseRandomProjection().johnson_lindenstrauss_min_dim(n_samples, eps) == expected


def test_johnson_lindenstrauss_method_defaults_to_eps_0_1() -> None:
    assert SparseRandomProjection(eps=0.9).johnson_lindenstrauss_min_dim(1000) == int(sklearn_min_dim(1000, eps=0.1))


@pytest.mark.parametrize("eps", [0, 0.0, 1, 1.0, -0.1, 1.5])
def test_eps_out_of_range_is_rejected(eps) -> None:
    with pytest.raises(ValueError, match="eps"):
        SparseRandomProjection(eps=eps)
    with pytest.raises(ValueError, match="eps"):
        johnson_lindenstrauss_min_dim(10, eps)


@pytest.mark.parametrize("eps", [True, "0.1", None])
def test_eps_of_wrong_type_is_rejected(eps) -> None:
    with pytest.raises(TypeError, match="eps"):
        SparseRandomProjection(eps=eps)


def test_bad_n_samples_and_random_state_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_samples"):
        johnson_lindenstrauss_min_dim(0, 0.5)
    with pytest.raises(TypeError, match="n_samples"):
        johnson_lindenstrauss_min_dim(10.0, 0.5)
    with pytest.raises(TypeError, match="random_state"):
        SparseRandomProjection(random_state=1.5)
    with pytest.raises(TypeError, match="random_state"):
        SparseRandomProjection(random_state=True)
    with pytest.raises(ValueError, match="random_state"):
        SparseRandomProjection(random_state=-1)


def test_fit_returns_self_and_sizes_from_the_bound() -> None:
    projection = SparseRandomProjection(eps=0.9, random_state=0)
    assert projection.fit(torch.randn(1000, 400)) is projection
    assert projection.n_components == 170
    assert projection.n_features == 400
    assert projection.crow_indices.shape == (171,)
    assert projection.col_indices.shape == projection.signs.shape


def test_every_row_has_distinct_sorted_columns() -> None:
    projection = fitted(2000, 900)
    crow = projection.crow_indices
    cols = projection.col_indices
    assert int(crow[0]) == 0 and int(crow[-1]) == cols.numel()
    assert bool((crow.diff() >= 0).all())
    for row in range(projection.n_components):
        row_cols = cols[crow[row] : crow[row + 1]]
        assert bool((row_cols.diff() > 0).all()), f"row {row} repeats or unsorts a column"
        assert bool((row_cols >= 0).all() and (row_cols < 900).all())


def test_rows_have_their_own_patterns() -> None:
    matrix = dense_from_csr(fitted(2000, 900, random_state=3))
    patterns = {tuple(np.flatnonzero(row)) for row in matrix}
    # Two independent rows share a pattern with negligible probability.
    assert len(patterns) == matrix.shape[0]
    counts = (matrix != 0).sum(axis=1)
    assert counts.min() != counts.max()


def test_density_is_one_over_sqrt_of_the_features() -> None:
    num_features = 900
    projection = fitted(5000, num_features, eps=0.35, random_state=11)
    density = 1 / math.sqrt(num_features)
    entries = projection.n_components * num_features
    nnz = projection.col_indices.numel()
    # nnz ~ Binomial(entries, density): accept within 5 standard deviations.
    assert abs(nnz - entries * density) < 5 * math.sqrt(entries * density * (1 - density))

    counts = projection.crow_indices.diff().double()
    # Per-row counts ~ Binomial(num_features, density): their variance matches too.
    expected_variance = num_features * density * (1 - density)
    assert abs(counts.var().item() / expected_variance - 1) < 0.35

    # Columns are uniform: every column is hit about equally often across rows.
    column_hits = torch.bincount(projection.col_indices, minlength=num_features).double()
    expected_hits = projection.n_components * density
    assert abs(column_hits.mean().item() - expected_hits) < 0.05 * expected_hits


def test_values_are_exactly_plus_or_minus_scale_with_balanced_signs() -> None:
    projection = fitted(5000, 900, eps=0.35, random_state=5)
    k = projection.n_components
    # sqrt(1/s)/sqrt(k) with s = 1/sqrt(D): D^(1/4) / sqrt(k).
    assert projection.scale == pytest.approx(900**0.25 / math.sqrt(k), rel=1e-14)
    assert set(projection.signs.unique().tolist()) == {-1, 1}

    matrix = projection.sparse_random_matrix
    assert matrix.shape == (k, 900) and matrix.dtype == torch.float32
    nonzero = matrix[matrix != 0]
    assert bool((nonzero.abs() == torch.tensor(projection.scale, dtype=torch.float32)).all())
    assert nonzero.numel() == projection.col_indices.numel()

    positive_fraction = (projection.signs > 0).double().mean().item()
    nnz = projection.signs.numel()
    assert abs(positive_fraction - 0.5) < 5 * 0.5 / math.sqrt(nnz)


def test_same_seed_gives_the_same_matrix_and_different_seeds_differ() -> None:
    first = fitted(1000, 300, random_state=42)
    second = fitted(1000, 300, random_state=42)
    other = fitted(1000, 300, random_state=43)
    assert torch.equal(first.crow_indices, second.crow_indices)
    assert torch.equal(first.col_indices, second.col_indices)
    assert torch.equal(first.signs, second.signs)
    assert not torch.equal(first.sparse_random_matrix, other.sparse_random_matrix)


def test_no_seed_follows_the_global_torch_rng() -> None:
    torch.manual_seed(123)
    first = fitted(1000, 300, random_state=None)
    torch.manual_seed(123)
    second = fitted(1000, 300, random_state=None)
    third = fitted(1000, 300, random_state=None)
    assert torch.equal(first.sparse_random_matrix, second.sparse_random_matrix)
    assert not torch.equal(second.sparse_random_matrix, third.sparse_random_matrix)


def test_sparse_random_matrix_method_redraws_the_fitted_matrix_for_a_seed() -> None:
    projection = fitted(1000, 300, random_state=9)
    matrix = projection._sparse_random_matrix(300)
    assert matrix.shape == (projection.n_components, 300)
    np.testing.assert_array_equal(matrix.double().numpy(), dense_from_csr(projection).astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transform_equals_product_with_the_dense_matrix(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(300, 500, generator=generator, dtype=dtype)
    original = embedding.clone()
    projection = SparseRandomProjection(eps=0.5, random_state=1).fit(embedding)
    projected = projection.transform(embedding)
    assert projected.shape == (300, projection.n_components)
    assert projected.dtype == dtype and projected.device == embedding.device
    expected = embedding.double().numpy() @ dense_from_csr(projection).T
    tolerance = 1e-4 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(projected.double().numpy(), expected, rtol=tolerance, atol=tolerance)
    assert torch.equal(embedding, original)


def test_transform_accepts_non_contiguous_input() -> None:
    embedding = torch.randn(400, 300).T
    projection = SparseRandomProjection(eps=0.5, random_state=2).fit(embedding)
    expected = embedding.double().numpy() @ dense_from_csr(projection).T
    np.testing.assert_allclose(projection.transform(embedding).double().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_pairwise_distances_are_approximately_preserved() -> None:
    eps = 0.5
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(100, 1000, generator=generator, dtype=torch.float64)
    projection = SparseRandomProjection(eps=eps, random_state=0).fit(embedding)
    projected = projection.transform(embedding)
    upper = torch.triu_indices(100, 100, offset=1)
    original_distances = torch.cdist(embedding, embedding)[upper[0], upper[1]]
    projected_distances = torch.cdist(projected, projected)[upper[0], upper[1]]
    ratios = projected_distances / original_distances
    within = ((ratios > 1 - eps) & (ratios < 1 + eps)).double().mean().item()
    assert within > 0.99
    assert abs(ratios.mean().item() - 1) < 0.05


def test_bound_above_the_feature_count_warns_and_caps() -> None:
    projection = SparseRandomProjection(eps=0.5, random_state=0)
    expected_bound = int(sklearn_min_dim(1000, eps=0.5))
    with pytest.warns(UserWarning, match=rf"{expected_bound} components.*50 input features"):
        projection.fit(torch.empty(1000, 50))
    assert projection.n_components == 50
    assert projection.transform(torch.randn(7, 50)).shape == (7, 50)


def test_bound_below_the_feature_count_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted(1000, 1536, eps=0.9)


def test_single_sample_projects_to_one_component() -> None:
    projection = fitted(1, 20)
    assert projection.n_components == 1
    assert projection.transform(torch.randn(1, 20)).shape == (1, 1)


def test_unfitted_projection_raises_not_fitted_error() -> None:
    projection = SparseRandomProjection()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    with pytest.raises(NotFittedError, match="not fitted"):
        projection.transform(torch.randn(3, 4))
    assert not hasattr(projection, "sparse_random_matrix")
    with pytest.raises(NotFittedError):
        projection._sparse_random_matrix(10)


def test_bad_inputs_are_rejected() -> None:
    projection = SparseRandomProjection(eps=0.5, random_state=0)
    with pytest.raises(ValueError, match="2-D"):
        projection.fit(torch.randn(10))
    with pytest.raises(ValueError, match="non-empty"):
        projection.fit(torch.empty(0, 10))
    with pytest.raises(TypeError, match="torch.Tensor"):
        projection.fit(np.zeros((3, 3)))
    projection.fit(torch.randn(50, 400))
    with pytest.raises(ValueError, match=r"\(N, 400\)"):
        projection.transform(torch.randn(5, 401))
    with pytest.raises(ValueError, match=r"\(N, 400\)"):
        projection.transform(torch.randn(400))
    with pytest.raises(TypeError, match="floating-point"):
        projection.transform(torch.ones(5, 400, dtype=torch.int64))


def test_pickle_round_trip_keeps_the_fitted_state() -> None:
    projection = fitted(1000, 300, random_state=4)
    restored = pickle.loads(pickle.dumps(projection))
    embedding = torch.randn(20, 300)
    torch.testing.assert_close(restored.transform(embedding), projection.transform(embedding), rtol=0, atol=0)
    assert restored.eps == projection.eps and restored.random_state == 4


def test_the_pattern_is_copied_to_a_device_once_and_again_only_when_it_changes() -> None:
    # The meta device stands in for a GPU: copies to it are real new tensors, and the operator's
    # fake kernel runs there.
    projection = SparseRandomProjection(eps=0.9, random_state=0).fit(torch.randn(100, 64))
    meta = torch.device("meta")
    first = projection._pattern_on(meta)
    assert all(t.device == meta for t in first)
    assert all(a is b for a, b in zip(projection._pattern_on(meta), first))
    assert projection.transform(torch.randn(3, 64, device=meta)).shape == (3, projection.n_components)
    assert all(a is b for a, b in zip(projection._pattern_on(meta), first))
    projection.signs.mul_(-1)  # in place: the device copy is stale
    assert projection._pattern_on(meta)[2] is not first[2]
    second = projection._pattern_on(meta)
    projection.fit(torch.randn(100, 64))  # new tensors
    assert all(a is not b for a, b in zip(projection._pattern_on(meta), second))
    # CPU inputs use the fitted tensors themselves.
    assert all(a is b for a, b in zip(projection._pattern_on(torch.device("cpu")),
                                      (projection.crow_indices, projection.col_indices, projection.signs)))


def test_a_pickle_holds_no_device_copy_of_the_pattern() -> None:
    projection = SparseRandomProjection(eps=0.9, random_state=0).fit(torch.randn(100, 64))
    projection._pattern_on(torch.device("meta"))
    restored = pickle.loads(pickle.dumps(projection))
    assert "_device_pattern" not in restored.__dict__
    x = torch.randn(5, 64)
    torch.testing.assert_close(restored.transform(x), projection.transform(x), rtol=0, atol=0)
