"""GaussianKDE against scipy.stats.gaussian_kde and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde

from anomaly_kernels.components.dimensionality_reduction import NotFittedError
from anomaly_kernels.components.stats import GaussianKDE


def correlated_dataset(seed: int, num_samples: int, num_dims: int, offset: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(num_dims, num_dims, generator=generator, dtype=torch.float64) + 2 * torch.eye(
        num_dims, dtype=torch.float64
    )
    return torch.randn(num_samples, num_dims, generator=generator, dtype=torch.float64) @ mixing + offset


@pytest.mark.parametrize("num_dims", [1, 2, 4])
def test_densities_match_scipy_in_float64(num_dims: int) -> None:
    dataset = correlated_dataset(0, 300, num_dims, offset=5.0)
    queries = correlated_dataset(1, 40, num_dims, offset=5.0)
    kde = GaussianKDE()
    kde.fit(dataset)
    densities = kde(queries)
    assert densities.shape == (40,) and densities.dtype == torch.float64
    expected = gaussian_kde(dataset.numpy().T)(queries.numpy().T)
    np.testing.assert_allclose(densities.numpy(), expected, rtol=1e-4)


def test_queries_are_centred_with_the_training_mean() -> None:
    # A large offset makes any mix-up of centred and uncentred coordinates obvious.
    dataset = correlated_dataset(2, 200, 3, offset=100.0)
    queries = dataset[:10] + 0.1
    expected = gaussian_kde(dataset.numpy().T)(queries.numpy().T)
    assert expected.min() > 1e-6
    np.testing.assert_allclose(GaussianKDE(dataset)(queries).numpy(), expected, rtol=1e-4)


def test_float32_densities_match_scipy_loosely() -> None:
    dataset = correlated_dataset(3, 300, 3, offset=2.0)
    queries = correlated_dataset(4, 30, 3, offset=2.0)
    kde = GaussianKDE(dataset.float())
    densities = kde(queries.float())
    assert densities.dtype == torch.float32
    reference = gaussian_kde(dataset.numpy().T)
    expected = reference(queries.numpy().T)
    # Below float32's normal range (~1e-38) a density keeps only a few significant bits.
    representable = expected > 1e-30
    assert representable.sum() > 20
    np.testing.assert_allclose(densities.double().numpy()[representable], expected[representable], rtol=2e-3)
    expected_log = reference.logpdf(queries.numpy().T)
    np.testing.assert_allclose(kde.log_density(queries.float()).double().numpy(), expected_log, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_density_stays_finite_far_from_the_data(dtype: torch.dtype) -> None:
    dataset = correlated_dataset(5, 200, 2)
    queries = torch.tensor([[40.0, -40.0], [0.5, 0.5], [-60.0, 10.0]], dtype=torch.float64)
    kde = GaussianKDE(dataset.to(dtype))
    log_densities = kde.log_density(queries.to(dtype))
    assert bool(torch.isfinite(log_densities).all())
    expected = gaussian_kde(dataset.numpy().T).logpdf(queries.numpy().T)
    rtol = 1e-3 if dtype == torch.float32 else 1e-6
    np.testing.assert_allclose(log_densities.double().numpy(), expected, rtol=rtol)
    # Far away the density itself underflows to zero, never to NaN.
    assert bool((kde(queries.to(dtype)) >= 0).all())


def test_many_training_rows_equal_scipy() -> None:
    # More rows than one tile of the fused kernel (512), with a ragged last tile.
    dataset = correlated_dataset(6, 1300, 2)
    queries = correlated_dataset(7, 23, 2)
    expected = gaussian_kde(dataset.numpy().T)(queries.numpy().T)
    np.testing.assert_allclose(GaussianKDE(dataset)(queries).numpy(), expected, rtol=1e-4)


def test_empty_query_batch_gives_empty_result() -> None:
    kde = GaussianKDE(correlated_dataset(8, 20, 2))
    assert kde(torch.empty(0, 2, dtype=torch.float64)).shape == (0,)


def test_constructor_dataset_fits_like_fit() -> None:
    dataset = correlated_dataset(9, 100, 3)
    from_constructor = GaussianKDE(dataset)
    from_fit = GaussianKDE()
    from_fit.fit(dataset)
    for name in ("bw_transform", "dataset", "mean", "norm"):
        torch.testing.assert_close(getattr(from_constructor, name), getattr(from_fit, name), rtol=0, atol=0)


def test_buffers_follow_the_documented_formulas() -> None:
    dataset = correlated_dataset(10, 150, 3, offset=1.0)
    kde = GaussianKDE(dataset)
    data = dataset.numpy()
    n, d = data.shape
    factor = n ** (-1 / (d + 4))
    inverse = np.linalg.inv(np.cov(data, rowvar=False)) / factor**2
    lower = np.linalg.cholesky(inverse)
    np.testing.assert_allclose(kde.bw_transform.numpy(), lower, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kde.mean.numpy(), data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(kde.dataset.numpy(), (data - data.mean(axis=0)) @ lower, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(kde.norm.item(), np.prod(np.diag(lower)) * (2 * math.pi) ** (-d / 2), rtol=1e-10)


def test_inputs_are_not_mutated() -> None:
    dataset = correlated_dataset(11, 60, 2, offset=3.0)
    queries = correlated_dataset(12, 5, 2, offset=3.0)
    dataset_copy, queries_copy = dataset.clone(), queries.clone()
    kde = GaussianKDE(dataset)
    kde.fit(dataset)
    kde(queries)
    kde.log_density(queries)
    GaussianKDE.cov(dataset)
    assert torch.equal(dataset, dataset_copy)
    assert torch.equal(queries, queries_copy)


@pytest.mark.parametrize("shape", [(10, 1), (5, 3), (50, 7)])
def test_cov_matches_numpy(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(13)
    observations = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3 + 1
    expected = np.atleast_2d(np.cov(observations.numpy(), rowvar=False))
    np.testing.assert_allclose(GaussianKDE.cov(observations).numpy(), expected, rtol=1e-12)


def test_cov_needs_two_rows() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        GaussianKDE.cov(torch.randn(1, 3))


def test_unfitted_forward_raises() -> None:
    kde = GaussianKDE()
    with pytest.raises(NotFittedError, match="not fitted"):
        kde(torch.randn(3, 2))
    with pytest.raises(ValueError, match="not fitted"):
        kde.log_density(torch.randn(3, 2))


@pytest.mark.parametrize(
    ("dataset", "error", "message"),
    [
        (torch.randn(10, dtype=torch.float64), ValueError, "2-D"),
        (torch.randn(3, 3, dtype=torch.float64), ValueError, "at least d \\+ 1 = 4 rows"),
        (torch.empty(0, 2), ValueError, "at least d \\+ 1"),
        (torch.empty(5, 0), ValueError, "at least one feature"),
        (torch.tensor([[0.0, 1.0], [1.0, float("nan")], [2.0, 0.0], [3.0, 1.0]]), ValueError, "finite"),
        (torch.ones(5, 2, dtype=torch.int32), TypeError, "floating-point"),
    ],
)
def test_bad_datasets_are_rejected(dataset, error, message) -> None:
    with pytest.raises(error, match=message):
        GaussianKDE().fit(dataset)


@pytest.mark.parametrize("seed", range(5))
def test_singular_covariance_is_a_clear_error(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([3.0, 0.2], dtype=torch.float64)
    columns = torch.randn(20, 2, generator=generator, dtype=torch.float64) * scales
    first = columns[:, :1]
    with pytest.raises(ValueError, match="singular"):
        GaussianKDE(torch.cat([first, 2 * first], dim=1))
    with pytest.raises(ValueError, match="singular"):
        GaussianKDE(torch.cat([first, torch.ones(20, 1, dtype=torch.float64)], dim=1))
    with pytest.raises(ValueError, match="rank 2 < 3"):
        GaussianKDE(torch.cat([columns, columns.sum(dim=1, keepdim=True)], dim=1))
    with pytest.raises(ValueError, match="singular"):
        GaussianKDE(torch.cat([columns, columns.sum(dim=1, keepdim=True)], dim=1).float())


def test_query_shape_is_checked() -> None:
    kde = GaussianKDE(correlated_dataset(14, 30, 3))
    with pytest.raises(ValueError, match="3 columns"):
        kde(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        kde(torch.randn(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        kde(torch.ones(4, 3, dtype=torch.int64))
