"""PaDiM: embedding, channel selection, Gaussian fit and Mahalanobis maps against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_kernels.models import AnomalyMapGenerator, PaDiM, PadimModel

SIZE = (32, 32)
LAYERS = ("layer1", "layer2")
N_FEATURES = 8


def make_model(seed: int = 0, n_features: int = N_FEATURES, **options) -> PadimModel:
    torch.manual_seed(seed)
    arguments = {"input_size": SIZE, "layers": LAYERS, "backbone": "resnet18", "pre_trained": False}
    return PadimModel(n_features=n_features, **{**arguments, **options})


def images(seed: int, count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fitted() -> tuple[PadimModel, torch.Tensor]:
    model = make_model()
    train_embeddings = model.embed(images(100, count=6))
    model.fit(train_embeddings)
    return model, train_embeddings


def test_channel_selection_is_fixed_sorted_and_saved():
    first, second = make_model(seed=0), make_model(seed=1)
    assert torch.equal(first.idx, second.idx)
    assert first.idx.shape == (N_FEATURES,) and first.idx.dtype == torch.int64
    assert (first.idx.diff() > 0).all() and 0 <= first.idx.min() and first.idx.max() < 64 + 128
    assert "idx" in first.state_dict()


def test_default_n_features_for_resnet18():
    model = make_model(n_features=None, layers=("layer1", "layer2", "layer3"))
    assert model.n_features == 100 and model.gaussian.inv_covariance.shape == (8 * 8, 100, 100)


def test_embedding_is_nearest_upsampled_concatenation_of_selected_channels():
    model = make_model()
    batch = images(1)
    features = {name: value.numpy() for name, value in model.feature_extractor(batch).items()}
    second = features["layer2"].repeat(2, axis=2).repeat(2, axis=3)
    expected = np.concatenate([features["layer1"], second], axis=1)[:, model.idx.numpy()]
    embedding = model.embed(batch)
    assert embedding.shape == (2, N_FEATURES, 8, 8) and model.embedding_size == (8, 8)
    np.testing.assert_allclose(embedding.numpy(), expected, rtol=1e-6, atol=1e-6)


def reference_distances(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Mahalanobis distances (B, 1, h, w) of test embeddings to per-position Gaussians of train."""
    batch, channels, height, width = test.shape
    train_rows = train.reshape(train.shape[0], channels, -1)
    test_rows = test.reshape(batch, channels, -1)
    out = np.empty((batch, height * width))
    for position in range(height * width):
        samples = train_rows[:, :, position]
        precision = np.linalg.inv(np.cov(samples, rowvar=False) + 0.01 * np.eye(channels))
        delta = test_rows[:, :, position] - samples.mean(axis=0)
        out[:, position] = np.sqrt(np.einsum("bi,ij,bj->b", delta, precision, delta))
    return out.reshape(batch, 1, height, width)


def test_maps_match_numpy_mahalanobis(fitted):
    model, train_embeddings = fitted
    batch = images(2, count=3)
    test_embeddings = model.embed(batch)
    expected = reference_distances(train_embeddings.double().numpy(), test_embeddings.double().numpy())
    expected_maps = AnomalyMapGenerator(SIZE)(torch.from_numpy(expected).float())
    maps = model(batch)
    assert maps.shape == (3, 1, *SIZE)
    torch.testing.assert_close(maps, expected_maps, rtol=1e-4, atol=1e-4)


def test_lightning_scores_are_map_maxima_and_survive_a_round_trip(fitted):
    model, _ = fitted
    module = PaDiM(backbone="resnet18", layers=LAYERS, pre_trained=False, n_features=N_FEATURES, input_size=SIZE)
    module.model.load_state_dict(model.state_dict())
    torch.manual_seed(5)
    fresh = PaDiM(backbone="resnet18", layers=LAYERS, pre_trained=False, n_features=N_FEATURES, input_size=SIZE)
    fresh.load_state_dict(module.state_dict())
    batch = {"image": images(3), "label": torch.tensor([0, 1])}
    expected, loaded = module.validation_step(batch, 0), fresh.validation_step(batch, 0)
    torch.testing.assert_close(expected["pred_scores"], expected["anomaly_maps"].amax(dim=(1, 2, 3)), rtol=0, atol=0)
    assert torch.equal(expected["anomaly_maps"], loaded["anomaly_maps"])
    assert torch.equal(expected["pred_scores"], loaded["pred_scores"])


def test_state_dict_round_trip_into_fresh_model(fitted):
    model, _ = fitted
    fresh = make_model(seed=3)
    assert not fresh.is_fitted
    fresh.load_state_dict(model.state_dict())
    assert fresh.is_fitted
    batch = images(4)
    assert torch.equal(fresh(batch), model(batch))


def test_images_and_embeddings_are_not_modified(fitted):
    model, train_embeddings = fitted
    batch = images(6)
    copy = batch.clone()
    model(batch)
    assert torch.equal(batch, copy)
    embeddings = train_embeddings.clone()
    make_model().fit(embeddings)
    assert torch.equal(embeddings, train_embeddings)


def test_unfitted_model_wrong_images_and_too_few_images_raise(fitted):
    with pytest.raises(RuntimeError, match="not fitted"):
        make_model()(images(7))
    module = PaDiM(backbone="resnet18", layers=LAYERS, pre_trained=False, n_features=N_FEATURES, input_size=SIZE)
    with pytest.raises(ValueError, match="at least 2 training images"):
        module._fit_model(module.model.embed(images(8, count=1)))
    with pytest.raises(ValueError, match="input_size"):
        fitted[0](torch.rand(1, 3, 40, 40))


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"n_features": 193}, ValueError, "n_features must be <= the 192 channels"),
        ({"n_features": 0}, ValueError, "n_features"),
        ({"n_features": None, "backbone": "resnet34"}, ValueError, "no default for backbone 'resnet34'"),
        ({"layers": ("layer1", "layer5")}, ValueError, "layer5"),
        ({"input_size": (0, 32)}, ValueError, "input_size"),
    ],
)
def test_bad_arguments_raise(options, error, message):
    arguments = {"backbone": "resnet18", "layers": LAYERS, "pre_trained": False, "input_size": SIZE, "n_features": 8}
    with pytest.raises(error, match=message):
        PaDiM(**{**arguments, **options})
