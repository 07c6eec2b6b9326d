"""End-to-end Lightning runs of PatchCore, PaDiM and DFKDE on a synthetic defect data set.

Normal images are smooth random textures; anomalous ones carry a 16×16 bright or dark square
(their mask). The backbones have random weights (offline), so only clear-cut detection is
asserted; every metric reference comes from scikit-learn.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset

from support.lightning_noise import LIGHTNING_NOISE
from support.toy_defects import SIZE, SyntheticDefects

from anomaly_kernels.models import DFKDE, PaDiM, PatchCore

pytestmark = LIGHTNING_NOISE

NUM_TRAIN = 24
NUM_TEST_PER_CLASS = 8
BATCH_SIZE = 8


def loader(dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False, num_workers=0)


def make_trainer(**options) -> pl.Trainer:
    settings = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**settings, **options})


MODELS = {
    "patchcore": (PatchCore, {"backbone": "resnet18", "layers": ("layer1", "layer2"), "input_size": (SIZE, SIZE)}),
    "padim": (
        PaDiM,
        {"backbone": "resnet18", "layers": ("layer1", "layer2"), "n_features": 50, "input_size": (SIZE, SIZE)},
    ),
    # With random weights the deepest layer's pooled features barely see the squares; layer2 +
    # layer3 keep enough of them for the image-level density to separate the classes.
    "dfkde": (DFKDE, {"backbone": "resnet18", "layers": ("layer2", "layer3")}),
}


def build(name: str):
    model_class, options = MODELS[name]
    torch.manual_seed(0)
    return model_class(pre_trained=False, **options)


@pytest.fixture(scope="module")
def train_set() -> SyntheticDefects:
    return SyntheticDefects([0] * NUM_TRAIN, seed=0)


@pytest.fixture(scope="module")
def test_set() -> SyntheticDefects:
    return SyntheticDefects([0] * NUM_TEST_PER_CLASS + [1] * NUM_TEST_PER_CLASS, seed=1)


@pytest.fixture(scope="module", params=list(MODELS))
def run(request, train_set, test_set):
    """fit (with validation), then validate, test and predict on the test set."""
    module = build(request.param)
    trainer = make_trainer()
    torch.manual_seed(0)
    trainer.fit(module, loader(train_set), loader(test_set))
    fit_metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    validate = trainer.validate(module, loader(test_set), verbose=False)[0]
    test = trainer.test(module, loader(test_set), verbose=False)[0]
    predictions = trainer.predict(module, loader(test_set))
    scores = torch.cat([batch["pred_scores"] for batch in predictions])
    labels = torch.cat([batch["label"] for batch in predictions])
    return {
        "name": request.param,
        "module": module,
        "trainer": trainer,
        "fit_metrics": fit_metrics,
        "validate": validate,
        "test": test,
        "predictions": predictions,
        "scores": scores,
        "labels": labels,
    }


def test_detects_the_synthetic_defects(run):
    scores, labels = run["scores"].numpy(), run["labels"].numpy()
    assert roc_auc_score(labels, scores) >= 0.9


def test_logged_image_auroc_matches_sklearn(run):
    expected = roc_auc_score(run["labels"].numpy(), run["scores"].numpy())
    for stage in ("fit_metrics", "validate", "test"):
        assert run[stage]["image_AUROC"] == pytest.approx(expected, abs=1e-6)
    has_maps = run["name"] != "dfkde"
    assert ("pixel_AUROC" in run["test"]) == has_maps


def test_prediction_outputs(run):
    batch = run["predictions"][0]
    assert batch["pred_scores"].shape == (BATCH_SIZE,) and batch["pred_labels"].dtype == torch.bool
    assert torch.isfinite(batch["pred_scores"]).all()
    if run["name"] == "dfkde":
        assert "anomaly_maps" not in batch and ((batch["pred_scores"] > 0) & (batch["pred_scores"] < 1)).all()
    else:
        assert batch["anomaly_maps"].shape == (BATCH_SIZE, 1, SIZE, SIZE)
        assert batch["pred_masks"].shape == (BATCH_SIZE, 1, SIZE, SIZE)
        # Anomalous images (second batch) have their highest map values inside the square.
        anomalous = run["predictions"][1]
        maps, masks = anomalous["anomaly_maps"].flatten(1), anomalous["mask"].flatten(1)
        peaks = maps.argmax(dim=1)
        assert masks.gather(1, peaks[:, None]).float().mean() >= 0.75


def test_training_epoch_fitted_the_model(run):
    model = run["module"].model
    assert model.is_fitted and not model.feature_extractor.training
    if run["name"] == "patchcore":
        patches = NUM_TRAIN * 16 * 16  # 64 px input, layer1 at stride 4
        assert model.memory_bank.shape == (int(patches * 0.1), 192)
    # The collected features are released at the end of the training epoch.
    assert run["module"]._training_features == []
    # The fit ran outside inference mode: the fitted state can be overwritten in place.
    assert not any(buffer.is_inference() for buffer in model.buffers())
    model.load_state_dict(model.state_dict())


def test_checkpoint_round_trip_gives_identical_predictions(run, test_set, tmp_path):
    path = tmp_path / f"{run['name']}.ckpt"
    run["trainer"].save_checkpoint(path)
    model_class = MODELS[run["name"]][0]
    loaded = model_class.load_from_checkpoint(path)
    predictions = make_trainer().predict(loaded, loader(test_set))
    scores = torch.cat([batch["pred_scores"] for batch in predictions])
    assert torch.equal(scores, run["scores"])
    assert float(loaded.image_threshold.value) == float(run["module"].image_threshold.value)


def test_default_sanity_check_skips_the_unfitted_model(train_set, test_set):
    module = build("dfkde")
    trainer = make_trainer(num_sanity_val_steps=2)
    trainer.fit(module, loader(train_set), loader(test_set))
    assert module.model.is_fitted
    assert len(module.validation_step_outputs) == len(test_set) // BATCH_SIZE


def test_fit_without_validation_data_fits_at_epoch_end(train_set):
    module = build("dfkde")
    make_trainer().fit(module, loader(train_set))
    assert module.model.is_fitted


def test_mid_epoch_validation_is_followed_by_a_fit_on_the_whole_epoch(train_set, test_set):
    module = DFKDE(backbone="resnet18", pre_trained=False, n_pca_components=8)
    # Validation after 2 of the 3 training batches fits on 16 images; the epoch end refits on 24.
    trainer = make_trainer(val_check_interval=2)
    trainer.fit(module, loader(train_set), loader(test_set))
    assert len(module.validation_step_outputs) == len(test_set) // BATCH_SIZE
    assert module.model.kde_model.dataset.shape[0] == NUM_TRAIN


def test_validating_an_unfitted_model_raises(test_set):
    with pytest.raises(RuntimeError, match="not fitted"):
        make_trainer().validate(build("padim"), loader(test_set), verbose=False)


def test_a_default_trainer_writes_a_checkpoint_of_the_fitted_model(train_set, tmp_path):
    module = build("dfkde")
    trainer = make_trainer(enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(module, loader(train_set))
    assert trainer.global_step == len(train_set) // BATCH_SIZE
    written = list(tmp_path.rglob("*.ckpt"))
    assert len(written) == 1, written
    restored = build("dfkde")
    restored.load_state_dict(torch.load(written[0], weights_only=True)["state_dict"])
    assert restored.model.is_fitted
