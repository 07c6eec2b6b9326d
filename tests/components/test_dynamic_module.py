"""DynamicBufferModule: tensor attributes and fitted checkpoints loading into fresh modules."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde

from anomaly_kernels.components.base import DynamicBufferModule
from anomaly_kernels.components.dimensionality_reduction import PCA
from anomaly_kernels.components.stats import GaussianKDE


class TwoBuffers(DynamicBufferModule):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("first", torch.empty(0))
        self.register_buffer("second", torch.empty(0))
        self.label = "not a tensor"


def through_bytes(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_get_tensor_attribute_returns_tensors() -> None:
    module = TwoBuffers()
    module.first = torch.arange(3.0)
    assert module.get_tensor_attribute("first") is module.first


def test_get_tensor_attribute_rejects_other_attributes() -> None:
    with pytest.raises(ValueError, match="^Attribute with name 'label' is not a torch Tensor$"):
        TwoBuffers().get_tensor_attribute("label")


def test_buffers_are_resized_to_the_checkpoint_shapes() -> None:
    source = TwoBuffers()
    source.first = torch.randn(2, 3)
    source.second = torch.randn(4)
    fresh = TwoBuffers()
    fresh.load_state_dict(source.state_dict())
    assert torch.equal(fresh.first, source.first) and torch.equal(fresh.second, source.second)
    # The fresh module owns copies, not the source's storage.
    fresh.first.zero_()
    assert source.first.abs().sum() > 0


def training_rows(seed: int, num_samples: int, num_features: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(num_features, num_features, generator=generator)
    return torch.randn(num_samples, num_features, generator=generator) @ mixing + 1.5


@pytest.mark.parametrize("n_components", [3, 0.9])
@pytest.mark.parametrize("via_bytes", [False, True])
def test_fitted_pca_loads_into_a_fresh_module(n_components: int | float, via_bytes: bool) -> None:
    dataset = training_rows(0, 80, 6)
    queries = training_rows(1, 7, 6)
    fitted = PCA(n_components=n_components)
    fitted.fit(dataset)
    state = fitted.state_dict()
    assert set(state) == {"singular_vectors", "singular_values", "mean", "num_components"}

    fresh = PCA(n_components=n_components)
    fresh.load_state_dict(through_bytes(state) if via_bytes else state)
    for name in state:
        assert torch.equal(getattr(fresh, name), getattr(fitted, name)), name
    torch.testing.assert_close(fresh.transform(queries), fitted.transform(queries), rtol=0, atol=0)
    projected = fitted.transform(queries)
    torch.testing.assert_close(fresh.inverse_transform(projected), fitted.inverse_transform(projected), rtol=0, atol=0)


@pytest.mark.parametrize("via_bytes", [False, True])
def test_fitted_kde_loads_into_a_fresh_module(via_bytes: bool) -> None:
    dataset = training_rows(2, 120, 3)
    queries = training_rows(3, 9, 3)
    fitted = GaussianKDE(dataset)
    state = fitted.state_dict()
    assert set(state) == {"bw_transform", "dataset", "mean", "norm"}

    fresh = GaussianKDE()
    fresh.load_state_dict(through_bytes(state) if via_bytes else state)
    torch.testing.assert_close(fresh(queries), fitted(queries), rtol=0, atol=0)
    # The reloaded model still answers in the original space, like scipy on the raw rows.
    expected = gaussian_kde(dataset.double().numpy().T)(queries.double().numpy().T)
    np.testing.assert_allclose(fresh(queries).double().numpy(), expected, rtol=2e-3)


def test_dynamic_modules_survive_nesting_under_a_prefix() -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pca = PCA(n_components=2)
            self.kde = GaussianKDE()

    dataset = training_rows(4, 50, 4)
    fitted = Model()
    fitted.pca.fit(dataset)
    fitted.kde.fit(fitted.pca.transform(dataset))
    fresh = Model()
    fresh.load_state_dict(through_bytes(fitted.state_dict()))
    torch.testing.assert_close(
        fresh.kde(fresh.pca(dataset[:5])), fitted.kde(fitted.pca(dataset[:5])), rtol=0, atol=0
    )
