"""MultiVariateGaussian against numpy: covariance, per-position fit, Mahalanobis scoring, checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from anomaly_kernels.components.dimensionality_reduction import NotFittedError
from anomaly_kernels.components.stats import MultiVariateGaussian


def embedding(seed: int, batch: int = 12, channels: int = 5, height: int = 3, width: int = 4, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    # Correlate the channels and give every position its own offset.
    mixing = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    mixed = torch.einsum("cd,bdhw->bchw", mixing, base) + torch.arange(height * width).reshape(height, width)
    return mixed.to(dtype)


def numpy_gaussians(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position mean (C, P) and inverse covariance (P, C, C), one position at a time."""
    batch, channels = values.shape[:2]
    flat = values.reshape(batch, channels, -1)
    mean = flat.mean(axis=0)
    inverses = np.stack(
        [np.linalg.inv(np.cov(flat[:, :, p], rowvar=False) + 0.01 * np.eye(channels)) for p in range(flat.shape[2])]
    )
    return mean, inverses


def numpy_mahalanobis(values: np.ndarray, mean: np.ndarray, inverses: np.ndarray) -> np.ndarray:
    batch, channels, height, width = values.shape
    flat = values.reshape(batch, channels, -1)
    distances = np.empty((batch, flat.shape[2]))
    for b in range(batch):
        for p in range(flat.shape[2]):
            delta = flat[b, :, p] - mean[:, p]
            distances[b, p] = np.sqrt(max(delta @ inverses[p] @ delta, 0.0))
    return distances.reshape(batch, 1, height, width)


def test_buffers_are_pre_sized() -> None:
    gaussian = MultiVariateGaussian(n_features=3, n_patches=5)
    assert torch.equal(gaussian.mean, torch.zeros(3, 5))
    assert torch.equal(gaussian.inv_covariance, torch.eye(3).expand(5, 3, 3))
    assert not bool(gaussian.is_fitted)
    assert set(gaussian.state_dict()) == {"mean", "inv_covariance", "is_fitted"}


@pytest.mark.parametrize("rowvar", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ddof", [None, 0, 1, 2])
@pytest.mark.parametrize("weighted", [True, False])
def test_cov_matches_numpy(rowvar: bool, bias: bool, ddof: int | None, weighted: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(4, 9, generator=generator, dtype=torch.float64) + 2.0
    num_observations = observations.shape[1] if rowvar else observations.shape[0]
    aweights = torch.rand(num_observations, generator=generator, dtype=torch.float64) + 0.1
    weights = aweights if weighted else None
    expected = np.cov(
        observations.numpy(), rowvar=rowvar, bias=bias, ddof=ddof, aweights=None if weights is None else weights.numpy()
    )
    actual = MultiVariateGaussian._cov(observations, rowvar=rowvar, bias=bias, ddof=ddof, aweights=weights)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("rowvar", [True, False])
def test_cov_of_one_variable_matches_numpy(rowvar: bool) -> None:
    observations = torch.tensor([1.0, 4.0, 2.0, 8.0], dtype=torch.float64)
    expected = np.cov(observations.numpy(), rowvar=rowvar)
    actual = MultiVariateGaussian._cov(observations, rowvar=rowvar)
    assert actual.shape == ()
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12)
    column = observations.unsqueeze(1)
    np.testing.assert_allclose(
        MultiVariateGaussian._cov(column, rowvar=False).numpy(), np.cov(column.numpy(), rowvar=False), rtol=1e-12
    )


def test_cov_does_not_mutate_and_rejects_bad_input() -> None:
    observations = torch.randn(6, 3, dtype=torch.float64)
    original = observations.clone()
    MultiVariateGaussian._cov(observations)
    assert torch.equal(observations, original)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        MultiVariateGaussian._cov(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="aweights"):
        MultiVariateGaussian._cov(observations, aweights=torch.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        MultiVariateGaussian._cov(observations, aweights=-torch.ones(6))
    with pytest.raises(ValueError, match="degrees of freedom"):
        MultiVariateGaussian._cov(torch.randn(1, 3))


def test_fit_matches_numpy_per_position() -> None:
    values = embedding(1)
    original = values.clone()
    gaussian = MultiVariateGaussian(n_features=5, n_patches=12)
    mean, inv_covariance = gaussian.fit(values)
    expected_mean, expected_inverses = numpy_gaussians(values.numpy())
    assert mean.shape == (5, 12) and inv_covariance.shape == (12, 5, 5)
    np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inv_covariance.numpy(), expected_inverses, rtol=1e-9, atol=1e-10)
    assert mean is gaussian.mean and inv_covariance is gaussian.inv_covariance
    assert bool(gaussian.is_fitted)
    assert torch.equal(values, original)


def test_forward_is_fit() -> None:
    values = embedding(2)
    by_forward = MultiVariateGaussian(5, 12)(values)
    by_fit = MultiVariateGaussian(5, 12).fit(values)
    for left, right in zip(by_forward, by_fit):
        torch.testing.assert_close(left, right, rtol=0, atol=0)


def test_fewer_images_than_features_is_regularised() -> None:
    values = embedding(3, batch=3, channels=6)
    mean, inv_covariance = MultiVariateGaussian(6, 12).fit(values)
    _, expected_inverses = numpy_gaussians(values.numpy())
    np.testing.assert_allclose(inv_covariance.numpy(), expected_inverses, rtol=1e-7, atol=1e-8)


def test_float32_fit_and_scores_are_float32_and_close_to_numpy() -> None:
    values = embedding(4, dtype=torch.float32)
    gaussian = MultiVariateGaussian(5, 12)
    mean, inv_covariance = gaussian.fit(values)
    assert mean.dtype == torch.float32 and inv_covariance.dtype == torch.float32
    expected_mean, expected_inverses = numpy_gaussians(values.double().numpy())
    np.testing.assert_allclose(inv_covariance.double().numpy(), expected_inverses, rtol=1e-4, atol=1e-5)
    queries = embedding(5, batch=3, dtype=torch.float32)
    scores = gaussian.mahalanobis(queries)
    assert scores.dtype == torch.float32
    expected = numpy_mahalanobis(queries.double().numpy(), expected_mean, expected_inverses)
    np.testing.assert_allclose(scores.double().numpy(), expected, rtol=1e-4)


def test_mahalanobis_matches_numpy() -> None:
    gaussian = MultiVariateGaussian(5, 12)
    gaussian.fit(embedding(6))
    queries = embedding(7, batch=4)
    original = queries.clone()
    scores = gaussian.mahalanobis(queries)
    assert scores.shape == (4, 1, 3, 4)
    expected = numpy_mahalanobis(queries.numpy(), gaussian.mean.numpy(), gaussian.inv_covariance.numpy())
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-10)
    assert torch.equal(queries, original)


def test_mahalanobis_of_the_mean_is_zero() -> None:
    gaussian = MultiVariateGaussian(5, 12)
    gaussian.fit(embedding(8))
    at_mean = gaussian.mean.reshape(1, 5, 3, 4)
    torch.testing.assert_close(gaussian.mahalanobis(at_mean), torch.zeros(1, 1, 3, 4, dtype=torch.float64))


def test_unfitted_mahalanobis_raises() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        MultiVariateGaussian(5, 12).mahalanobis(embedding(9))


def test_state_dict_round_trip_into_a_fresh_module() -> None:
    fitted = MultiVariateGaussian(5, 12)
    fitted.fit(embedding(10, dtype=torch.float32))
    queries = embedding(11, batch=2, dtype=torch.float32)

    fresh = MultiVariateGaussian(5, 12)
    fresh.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(fresh.mahalanobis(queries), fitted.mahalanobis(queries), rtol=0, atol=0)

    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    from_file = MultiVariateGaussian(5, 12)
    from_file.load_state_dict(torch.load(buffer, weights_only=True))
    assert bool(from_file.is_fitted)
    torch.testing.assert_close(from_file.mahalanobis(queries), fitted.mahalanobis(queries), rtol=0, atol=0)


def test_float64_state_dict_round_trip_into_a_float64_module() -> None:
    # A fresh module holds float32 buffers and load_state_dict keeps the receiving dtype, so a
    # float64 checkpoint is loaded into a module converted with .double() first.
    fitted = MultiVariateGaussian(5, 12)
    fitted.fit(embedding(15))
    fresh = MultiVariateGaussian(5, 12).double()
    fresh.load_state_dict(fitted.state_dict())
    queries = embedding(16, batch=2)
    torch.testing.assert_close(fresh.mahalanobis(queries), fitted.mahalanobis(queries), rtol=0, atol=0)


def test_checkpoint_without_fitted_flag_loads_strictly_as_fitted() -> None:
    fitted = MultiVariateGaussian(5, 12)
    fitted.fit(embedding(12))
    legacy = {"mean": fitted.mean.float(), "inv_covariance": fitted.inv_covariance.float()}
    fresh = MultiVariateGaussian(5, 12)
    result = fresh.load_state_dict(legacy, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert bool(fresh.is_fitted)
    queries = embedding(13, batch=2, dtype=torch.float32)
    expected = fitted.mahalanobis(queries.double()).float()
    torch.testing.assert_close(fresh.mahalanobis(queries), expected, rtol=1e-5, atol=1e-5)


def test_unfitted_state_dict_stays_unfitted() -> None:
    fresh = MultiVariateGaussian(5, 12)
    fresh.load_state_dict(MultiVariateGaussian(5, 12).state_dict())
    assert not bool(fresh.is_fitted)


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        (torch.randn(4, 6, 3, 4), ValueError, "C == n_features \\(5\\)"),
        (torch.randn(4, 5, 3, 5), ValueError, "H\\*W == n_patches \\(12\\)"),
        (torch.randn(4, 5, 12), ValueError, "4-D"),
        (torch.randn(1, 5, 3, 4), ValueError, "at least 2 samples"),
        (torch.ones(4, 5, 3, 4, dtype=torch.int64), TypeError, "floating-point"),
        (torch.full((4, 5, 3, 4), float("nan")), ValueError, "finite"),
    ],
)
def test_bad_embeddings_are_rejected(values, error, message) -> None:
    with pytest.raises(error, match=message):
        MultiVariateGaussian(5, 12).fit(values)


def test_mahalanobis_checks_the_shape() -> None:
    gaussian = MultiVariateGaussian(5, 12)
    gaussian.fit(embedding(14))
    with pytest.raises(ValueError, match="n_patches"):
        gaussian.mahalanobis(torch.randn(2, 5, 4, 4, dtype=torch.float64))


@pytest.mark.parametrize(("n_features", "n_patches"), [(0, 4), (3, 0), (-1, 2), (2.5, 3), (True, 3)])
def test_bad_sizes_are_rejected(n_features, n_patches) -> None:
    with pytest.raises(ValueError, match="must be an int >= 1"):
        MultiVariateGaussian(n_features, n_patches)
