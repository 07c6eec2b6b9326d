"""DFKDE: pooled features → PCA → scaling → KDE → sigmoid score, against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde
from sklearn.decomposition import PCA as SklearnPCA

from anomaly_kernels.models import DFKDE, DfkdeModel

COMPONENTS = 4
STEEPNESS, OFFSET = 0.05, 12.0


def make_model(seed: int = 0, **options) -> DfkdeModel:
    torch.manual_seed(seed)
    arguments = {"layers": ("layer4",), "backbone": "resnet18", "pre_trained": False, "n_pca_components": COMPONENTS}
    return DfkdeModel(**{**arguments, **options})


def features(seed: int, rows: int) -> torch.Tensor:
    """(rows, 512) float64 features with a decaying spectrum, so the leading components are well separated."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(1, -1, 512, dtype=torch.float64)
    return torch.randn(rows, 512, generator=generator, dtype=torch.float64) * scales + 3.0


def reference_scores(train: np.ndarray, test: np.ndarray, scaling: str) -> np.ndarray:
    pca = SklearnPCA(n_components=COMPONENTS, svd_solver="full").fit(train)
    projected_train, projected_test = pca.transform(train), pca.transform(test)
    if scaling == "scale":
        max_length = np.linalg.norm(projected_train, axis=1).max()
        projected_train, projected_test = projected_train / max_length, projected_test / max_length
    else:
        projected_train = projected_train / np.linalg.norm(projected_train, axis=1, keepdims=True)
        projected_test = projected_test / np.linalg.norm(projected_test, axis=1, keepdims=True)
    log_density = gaussian_kde(projected_train.T).logpdf(projected_test.T)
    return 1.0 / (1.0 + np.exp(STEEPNESS * (log_density - OFFSET)))


@pytest.mark.parametrize("scaling", ["scale", "norm"])
def test_scores_match_sklearn_pca_and_scipy_kde(scaling):
    model = make_model(feature_scaling_method=scaling, threshold_steepness=STEEPNESS, threshold_offset=OFFSET)
    train, test = features(0, 60), torch.cat([features(1, 5), features(2, 3) * 1.5])
    model.fit(train)
    scores = model.compute_probabilities(model.log_density(test))
    np.testing.assert_allclose(scores.numpy(), reference_scores(train.numpy(), test.numpy(), scaling), rtol=1e-8)
    if scaling == "scale":
        assert model.max_length.shape == ()


def test_score_is_high_for_low_density_and_half_at_the_offset():
    model = make_model(threshold_steepness=0.5, threshold_offset=2.0)
    log_density = torch.tensor([-100.0, 2.0, 100.0], dtype=torch.float64)
    scores = model.compute_probabilities(log_density)
    expected = 1.0 / (1.0 + np.exp(0.5 * (log_density.numpy() - 2.0)))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-12)
    assert scores[0] > scores[1] == 0.5 > scores[2]


def test_training_points_are_a_fixed_subset():
    model = make_model(max_training_points=30)
    train = features(3, 50)
    original = train.clone()
    model.fit(train)
    assert torch.equal(train, original)
    kept = model.kde_model.dataset.clone()
    assert kept.shape == (30, COMPONENTS)
    model.fit(train)
    assert torch.equal(model.kde_model.dataset, kept)
    # Undo the KDE whitening: every kept row is a distinct, scaled PCA projection of a training row.
    recovered = kept @ torch.linalg.inv(model.kde_model.bw_transform) + model.kde_model.mean
    candidates = model.pca_model.transform(train) / model.max_length
    matches = torch.cdist(recovered, candidates).min(dim=1)
    assert matches.values.max() < 1e-6 and matches.indices.unique().numel() == 30


def test_images_give_probabilities_and_survive_a_round_trip():
    model = make_model()
    generator = torch.Generator().manual_seed(4)
    train_images, test_images = torch.rand(8, 3, 32, 32, generator=generator), torch.rand(3, 3, 32, 32, generator=generator)
    train_features = model.embed(train_images)
    assert train_features.shape == (8, 512)
    model.fit(train_features)
    scores = model(test_images)
    expected = reference_scores(train_features.double().numpy(), model.embed(test_images).double().numpy(), "scale")
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()

    fresh = make_model(seed=1)
    assert not fresh.is_fitted and fresh.max_length.shape == (0,)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(test_images), scores)


def test_lightning_module_scores_images_only():
    module = DFKDE(backbone="resnet18", pre_trained=False, n_pca_components=COMPONENTS)
    module._fit_model(module.model.embed(torch.rand(6, 3, 32, 32)))
    batch = {"image": torch.rand(2, 3, 32, 32), "label": torch.tensor([0, 1])}
    outputs = module.validation_step(batch, 0)
    assert set(outputs) == {"image", "label", "pred_scores"} and outputs["pred_scores"].shape == (2,)


def test_unfitted_model_and_too_few_images_raise():
    model = make_model()
    with pytest.raises(RuntimeError, match="not fitted"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least n_pca_components \\+ 1 = 5 training images"):
        model.fit(features(5, 4))
    with pytest.raises(ValueError, match="features must have shape \\(N, 512\\)"):
        model.fit(torch.randn(10, 7))


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"feature_scaling_method": "minmax"}, ValueError, "feature_scaling_method"),
        ({"max_training_points": 0}, ValueError, "max_training_points"),
        ({"threshold_steepness": float("nan")}, ValueError, "threshold_steepness"),
        ({"threshold_offset": "12"}, TypeError, "threshold_offset"),
        ({"n_pca_components": 0}, ValueError, "n_components"),
        ({"n_pca_components": 513}, ValueError, "n_pca_components must be <= the 512"),
        ({"layers": ("layer4", "head")}, ValueError, "head"),
    ],
)
def test_bad_arguments_raise(options, error, message):
    with pytest.raises(error, match=message):
        DFKDE(**{"backbone": "resnet18", "pre_trained": False, **options})
