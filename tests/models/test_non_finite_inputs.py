"""Every model refuses images with NaN or infinite values the same way, on every device.

The behaviour (documented in :mod:`anomaly_kernels.models.finite_images`): a ValueError naming
the images' indices in the batch, raised before the backbone runs; finite images whose scores
overflow are refused by index too, so no NaN or infinity ever leaves a model.
"""

from __future__ import annotations

import re

import pytest
import torch

from anomaly_kernels.models import DFKDE, PaDiM, PatchCore

SIZE = 32
TRAIN_IMAGES = 12

MODULES = {
    "patchcore": (PatchCore, {"layers": ("layer1", "layer2"), "input_size": (SIZE, SIZE), "coreset_seed": 0}),
    "padim": (PaDiM, {"layers": ("layer1", "layer2"), "n_features": 20, "input_size": (SIZE, SIZE)}),
    "dfkde": (DFKDE, {"layers": ("layer2", "layer3"), "n_pca_components": 4}),
}


@pytest.fixture(scope="module")
def fitted_cpu_modules():
    """Each Lightning module, fitted on random images with a random-weight resnet18 (offline)."""
    modules = {}
    for name, (cls, options) in MODULES.items():
        torch.manual_seed(0)
        module = cls(backbone="resnet18", pre_trained=False, **options)
        module._fit_model(module.model.embed(torch.rand(TRAIN_IMAGES, 3, SIZE, SIZE)))
        modules[name] = module
    return modules


@pytest.fixture(params=list(MODULES))
def model(request, fitted_cpu_modules, device):
    """A fitted torch model (PatchcoreModel, PadimModel, DfkdeModel) on ``device``."""
    return fitted_cpu_modules[request.param].model.to(device)


def _images(device: str, batch: int = 4) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, 3, SIZE, SIZE, device=device)


def _outputs(model, images: torch.Tensor):
    result = model(images)
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_pixel_is_refused_by_image_index(model, device, value):
    images = _images(device)
    images[2, 1, 5, 7] = value
    before = images.clone()
    with pytest.raises(ValueError, match=re.escape("image 2 of the batch of 4 holds NaN or infinite values")):
        model(images)
    assert torch.equal(images.isnan(), before.isnan())  # the caller's tensor is left as it was
    assert torch.equal(torch.nan_to_num(images), torch.nan_to_num(before))


def test_every_bad_image_is_named(model, device):
    images = _images(device, batch=5)
    images[0, 0, 0, 0] = float("nan")
    images[3, 2, -1, -1] = float("inf")
    with pytest.raises(ValueError, match=re.escape("images [0, 3] of the batch of 5 hold NaN or infinite values")):
        model(images)


def test_the_check_runs_before_the_backbone(model, device, monkeypatch):
    """Refused before any feature is computed: the backbone is never called."""
    calls = []
    extractor = model.feature_extractor
    monkeypatch.setattr(extractor, "forward", lambda *args, **kwargs: calls.append(1))
    images = _images(device)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image 1 of the batch of 4"):
        model(images)
    assert calls == []


def test_finite_images_that_overflow_are_refused_not_scored_nan(model, device):
    images = _images(device)
    images[1, 0, 3, 3] = 1e30  # finite, but the backbone's features and the distances overflow
    with pytest.raises(ValueError, match=r"non-finite scores: image 1 of the batch of 4 \(largest \|value\| 1e\+30\)"):
        model(images)


def test_finite_images_still_score_finite(model, device):
    for output in _outputs(model, _images(device)):
        assert output.shape[0] == 4 and torch.isfinite(output).all()


@pytest.mark.parametrize("name", list(MODULES))
def test_lightning_steps_raise_the_same_error(fitted_cpu_modules, name):
    """Prediction (validation_step) and training (training_step) of each Lightning module alike."""
    module = fitted_cpu_modules[name].cpu()
    images = _images("cpu")
    images[3, 0, 0, 0] = float("nan")
    batch = {"image": images, "label": torch.zeros(4, dtype=torch.int64)}
    message = re.escape("image 3 of the batch of 4 holds NaN or infinite values")
    with pytest.raises(ValueError, match=message):
        module.predict_step(batch, 0)
    with pytest.raises(ValueError, match=message):
        module.training_step(batch, 0)
