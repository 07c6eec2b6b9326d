"""PCA against scikit-learn and hand-derived properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from anomaly_kernels.components.dimensionality_reduction import PCA, NotFittedError


def decaying_spectrum_dataset(seed: int, num_samples: int = 120, num_features: int = 12) -> torch.Tensor:
    """Rows with a non-zero mean and a geometrically decaying variance spectrum."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -2, num_features, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(num_features, num_features, generator=generator, dtype=torch.float64))
    latent = torch.randn(num_samples, num_features, generator=generator, dtype=torch.float64) * scales
    return latent @ rotation.T + 3.0


def assert_equal_up_to_column_sign(actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    signs = np.sign(np.sum(actual * expected, axis=0))
    np.testing.assert_allclose(actual * signs, expected, atol=atol)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ratio", [0.5, 0.8, 0.9, 0.95, 0.97, 0.99])
def test_variance_ratio_keeps_as_many_components_as_sklearn(seed: int, ratio: float) -> None:
    dataset = decaying_spectrum_dataset(seed)
    pca = PCA(n_components=ratio)
    pca.fit(dataset)
    expected = SklearnPCA(n_components=ratio).fit(dataset.numpy()).n_components_
    assert int(pca.num_components.item()) == expected
    assert pca.singular_vectors.shape == (dataset.shape[1], expected)


def test_variance_ratio_0_97_reaches_the_ratio_with_the_fewest_components() -> None:
    dataset = decaying_spectrum_dataset(seed=5)
    pca = PCA(n_components=0.97)
    pca.fit(dataset)
    num_kept = int(pca.num_components.item())

    centred = dataset.numpy() - dataset.numpy().mean(axis=0)
    variances = np.linalg.svd(centred, compute_uv=False) ** 2
    cumulative = np.cumsum(variances) / variances.sum()
    assert cumulative[num_kept - 1] >= 0.97
    assert cumulative[num_kept - 2] < 0.97


def test_integer_one_means_one_component() -> None:
    dataset = decaying_spectrum_dataset(seed=0)
    pca = PCA(n_components=1)
    projected = pca.fit_transform(dataset)
    assert projected.shape == (dataset.shape[0], 1)
    assert int(pca.num_components.item()) == 1


@pytest.mark.parametrize("n_components", [1, 3, 12])
def test_transform_matches_sklearn_up_to_sign(n_components: int) -> None:
    dataset = decaying_spectrum_dataset(seed=7)
    queries = decaying_spectrum_dataset(seed=8, num_samples=9)
    pca = PCA(n_components=n_components)
    pca.fit(dataset)
    reference = SklearnPCA(n_components=n_components, svd_solver="full").fit(dataset.numpy())

    assert_equal_up_to_column_sign(pca.transform(queries).numpy(), reference.transform(queries.numpy()), atol=1e-10)
    np.testing.assert_allclose(pca.singular_values.numpy(), reference.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(pca.mean.numpy(), reference.mean_, rtol=1e-12)
    assert_equal_up_to_column_sign(pca.singular_vectors.numpy(), reference.components_.T, atol=1e-10)


def test_fit_transform_and_forward_agree_with_transform() -> None:
    dataset = decaying_spectrum_dataset(seed=1)
    pca = PCA(n_components=0.9)
    projected = pca.fit_transform(dataset)
    torch.testing.assert_close(projected, pca.transform(dataset), rtol=0, atol=0)
    torch.testing.assert_close(pca(dataset), projected, rtol=0, atol=0)
    reference = SklearnPCA(n_components=0.9).fit(dataset.numpy())
    assert_equal_up_to_column_sign(projected.numpy(), reference.transform(dataset.numpy()), atol=1e-10)


def test_inverse_transform_does_not_add_the_mean_back() -> None:
    dataset = decaying_spectrum_dataset(seed=2)
    pca = PCA(n_components=4)
    projected = pca.fit_transform(dataset)
    reference = SklearnPCA(n_components=4, svd_solver="full").fit(dataset.numpy())
    expected = reference.inverse_transform(reference.transform(dataset.numpy())) - reference.mean_
    np.testing.assert_allclose(pca.inverse_transform(projected).numpy(), expected, atol=1e-10)


def test_full_rank_inverse_transform_reconstructs_the_centred_data() -> None:
    dataset = decaying_spectrum_dataset(seed=3)
    pca = PCA(n_components=dataset.shape[1])
    reconstructed = pca.inverse_transform(pca.fit_transform(dataset))
    centred = dataset.numpy() - dataset.numpy().mean(axis=0)
    np.testing.assert_allclose(reconstructed.numpy(), centred, atol=1e-10)


def test_more_features_than_samples() -> None:
    generator = torch.Generator().manual_seed(4)
    dataset = torch.randn(6, 30, generator=generator, dtype=torch.float64)
    pca = PCA(n_components=6)
    projected = pca.fit_transform(dataset)
    reference = SklearnPCA(n_components=6, svd_solver="full").fit(dataset.numpy())
    # The sixth singular value of 6 centred rows is zero, so only compare the first five axes.
    assert_equal_up_to_column_sign(projected.numpy()[:, :5], reference.transform(dataset.numpy())[:, :5], atol=1e-10)


def test_float32_input_gives_float32_results_close_to_sklearn() -> None:
    dataset = decaying_spectrum_dataset(seed=6).float()
    pca = PCA(n_components=3)
    projected = pca.fit_transform(dataset)
    assert projected.dtype == torch.float32
    assert pca.singular_vectors.dtype == torch.float32
    assert pca.inverse_transform(projected).dtype == torch.float32
    reference = SklearnPCA(n_components=3, svd_solver="full").fit(dataset.double().numpy())
    assert_equal_up_to_column_sign(projected.double().numpy(), reference.transform(dataset.double().numpy()), atol=1e-4)


def test_inputs_are_not_mutated() -> None:
    dataset = decaying_spectrum_dataset(seed=0)
    original = dataset.clone()
    pca = PCA(n_components=0.95)
    pca.fit(dataset)
    pca.fit_transform(dataset)
    pca.transform(dataset)
    projected = pca.transform(dataset)
    projected_copy = projected.clone()
    pca.inverse_transform(projected)
    assert torch.equal(dataset, original)
    assert torch.equal(projected, projected_copy)


def test_unfitted_transform_raises_not_fitted_error() -> None:
    pca = PCA(n_components=2)
    with pytest.raises(NotFittedError, match="not fitted"):
        pca.transform(torch.randn(3, 4))
    with pytest.raises(ValueError):
        pca(torch.randn(3, 4))
    with pytest.raises(AttributeError):
        pca.inverse_transform(torch.randn(3, 2))


@pytest.mark.parametrize("n_components", [True, False, "3", None, torch.tensor(2)])
def test_n_components_of_wrong_type_is_rejected(n_components) -> None:
    with pytest.raises(TypeError, match="n_components"):
        PCA(n_components=n_components)


@pytest.mark.parametrize("n_components", [0, -1, 0.0, 1.0, 1.5, -0.2])
def test_n_components_out_of_range_is_rejected(n_components) -> None:
    with pytest.raises(ValueError, match="n_components"):
        PCA(n_components=n_components)


def test_more_components_than_min_samples_features_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"n_components=5 must be <= min\(n_samples, n_features\) = 4"):
        PCA(n_components=5).fit(torch.randn(4, 10))
    with pytest.raises(ValueError, match="= 3"):
        PCA(n_components=4).fit(torch.randn(10, 3))


@pytest.mark.parametrize(
    ("dataset", "error", "message"),
    [
        (torch.randn(10), ValueError, "2-D"),
        (torch.randn(2, 3, 4), ValueError, "2-D"),
        (torch.empty(0, 4), ValueError, "non-empty"),
        (torch.empty(4, 0), ValueError, "non-empty"),
        (torch.tensor([[1.0, float("nan")], [2.0, 3.0]]), ValueError, "finite"),
        (torch.tensor([[1.0, float("inf")], [2.0, 3.0]]), ValueError, "finite"),
        (torch.ones(4, 3, dtype=torch.int64), TypeError, "floating-point"),
    ],
)
def test_bad_datasets_are_rejected(dataset, error, message) -> None:
    with pytest.raises(error, match=message):
        PCA(n_components=1).fit(dataset)


def test_ratio_on_a_constant_dataset_is_rejected() -> None:
    with pytest.raises(ValueError, match="zero variance"):
        PCA(n_components=0.5).fit(torch.ones(5, 3))


def test_transform_checks_the_feature_dimension() -> None:
    pca = PCA(n_components=2)
    pca.fit(torch.randn(10, 4))
    with pytest.raises(ValueError, match="4 columns"):
        pca.transform(torch.randn(3, 5))
    with pytest.raises(ValueError, match="2 columns"):
        pca.inverse_transform(torch.randn(3, 3))
