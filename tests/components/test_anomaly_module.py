"""Tests of AnomalyModule and AdaptiveThreshold with a brightness "model" on a synthetic data set.

Anomalous images carry a bright square (their mask); the anomaly map is the per-pixel channel
mean, so image scores are separable and pixel scores overlap. Every reference value comes from
scikit-learn or numpy on the raw data, never from the module under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from support.lightning_noise import LIGHTNING_NOISE

from anomaly_kernels.components.base import AnomalyModule
from anomaly_kernels.components.base.adaptive_threshold import AdaptiveThreshold

# Lightning's remarks about the deliberately optimizer-free, worker-free test setup.
pytestmark = LIGHTNING_NOISE + [
    pytest.mark.filterwarnings("ignore:.*training_step.* returned .None:UserWarning"),
]

IMAGE_SIZE = 16
NUM_IMAGES = 16
BATCH_SIZE = 4


class SyntheticDefects(Dataset):
    """16 images (3, 16, 16): even indices normal (values ≤ 0.6), odd ones with a bright 4×4 defect."""

    def __init__(self, seed: int = 0, with_masks: bool = True) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(NUM_IMAGES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 0.6
        self.masks = torch.zeros(NUM_IMAGES, 1, IMAGE_SIZE, IMAGE_SIZE)
        self.labels = torch.arange(NUM_IMAGES) % 2
        for index in range(1, NUM_IMAGES, 2):
            row, col = torch.randint(0, IMAGE_SIZE - 4, (2,), generator=generator).tolist()
            # Defect pixels in [0.45, 1] overlap the background [0, 0.6]: pixel AUROC < 1 ...
            self.images[index, :, row : row + 4, col : col + 4] = 0.45 + 0.55 * torch.rand(3, 4, 4, generator=generator)
            # ... but one pixel ≥ 0.8 makes the image maxima separable from the normal ones (≤ 0.6).
            self.images[index, :, row, col] = 0.8 + 0.2 * torch.rand(3, generator=generator)
            self.masks[index, :, row : row + 4, col : col + 4] = 1.0
        self.with_masks = with_masks

    def __len__(self) -> int:
        return NUM_IMAGES

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index], "label": self.labels[index]}
        if self.with_masks:
            item["mask"] = self.masks[index]
        return item

    def maps(self) -> np.ndarray:
        """Reference anomaly maps (N, 1, H, W): channel means, computed with numpy."""
        return self.images.numpy().mean(axis=1, keepdims=True)


class ChannelMean(nn.Module):
    """Anomaly map = per-pixel mean over channels: (B, 3, H, W) → (B, 1, H, W)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=1, keepdim=True)


class BrightnessModule(AnomalyModule):
    """Minimal AnomalyModule: no training, maps (or only image scores) from ChannelMean."""

    def __init__(self, scores_only: bool = False, **options) -> None:
        super().__init__(**options)
        self.model = ChannelMean()
        self.scores_only = scores_only
        self.threshold_computations = 0

    def training_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return None

    def _compute_adaptive_threshold(self, outputs):
        self.threshold_computations += 1
        super()._compute_adaptive_threshold(outputs)

    def validation_step(self, batch, batch_idx, *args):
        maps = self(batch["image"])
        if self.scores_only:
            return {**batch, "pred_scores": maps.flatten(1).amax(1)}
        return {**batch, "anomaly_maps": maps}


def make_trainer() -> pl.Trainer:
    return pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def loader(dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False, num_workers=0)


def brute_force_f1_thresholds(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """All F1-optimal thresholds of ``score >= t`` and the optimal F1, from sklearn's PR curve."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1].astype(np.float64), recall[:-1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return thresholds[f1 >= f1.max() - 1e-12], float(f1.max())


@pytest.fixture(scope="module")
def dataset() -> SyntheticDefects:
    return SyntheticDefects()


# Pixel statistics: the default binned histograms (10_000 bins), and exact (every pixel kept).
PIXEL_MODES = {"binned": {}, "exact": {"pixel_num_bins": None}}
# Binned pixel AUROC counts pixel pairs sharing a bin as ties: documented to stay within 1e-3.
PIXEL_AUROC_TOLERANCE = {"binned": 1e-3, "exact": 1e-6}


@pytest.fixture(scope="module", params=list(PIXEL_MODES))
def fitted(dataset, request):
    """One fit (with its end-of-epoch validation), then validate, test and predict on the same data."""
    module = BrightnessModule(**PIXEL_MODES[request.param])
    trainer = make_trainer()
    trainer.fit(module, loader(dataset), loader(dataset))
    fit_threshold_computations = module.threshold_computations
    fit_outputs = len(module.validation_step_outputs)
    fit_metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    validate_results = trainer.validate(module, loader(dataset), verbose=False)
    test_results = trainer.test(module, loader(dataset), verbose=False)
    predictions = trainer.predict(module, loader(dataset))
    return {
        "module": module,
        "pixel_mode": request.param,
        "fit_metrics": fit_metrics,
        "fit_threshold_computations": fit_threshold_computations,
        "fit_outputs": fit_outputs,
        "validate": validate_results[0],
        "test": test_results[0],
        "predictions": predictions,
    }


def test_no_epoch_end_hooks_so_lightning_2_accepts_the_module(fitted):
    assert not hasattr(AnomalyModule, "validation_epoch_end")
    assert not hasattr(AnomalyModule, "test_epoch_end")
    # The fixture's Trainer.fit ran through Lightning's configuration checks.
    assert fitted["module"].validation_step_outputs


def test_sanity_check_neither_sets_thresholds_nor_leaks_outputs(fitted):
    # Lightning validates 2 batches before training: those must not count as an epoch.
    assert fitted["fit_threshold_computations"] == 1
    assert fitted["fit_outputs"] == NUM_IMAGES // BATCH_SIZE


def test_image_threshold_is_f1_optimal_and_separates_the_classes(fitted, dataset):
    scores = dataset.maps().reshape(NUM_IMAGES, -1).max(axis=1)
    labels = dataset.labels.numpy()
    optimal, best_f1 = brute_force_f1_thresholds(scores, labels)
    threshold = float(fitted["module"].image_threshold.value)
    assert best_f1 == 1.0
    assert threshold == pytest.approx(optimal.min(), abs=0)
    assert (scores[labels == 1] >= threshold).all() and (scores[labels == 0] < threshold).all()


def test_pixel_threshold_is_f1_optimal(fitted, dataset):
    maps, masks = dataset.maps().ravel(), dataset.masks.numpy().ravel().astype(int)
    optimal, best_f1 = brute_force_f1_thresholds(maps, masks)
    threshold = float(fitted["module"].pixel_threshold.value)
    assert 0.0 < best_f1 < 1.0  # the pixel data overlap: the threshold is a real trade-off
    assert f1_score(masks, maps >= threshold) == pytest.approx(best_f1, abs=1e-12)
    # Ties resolve to the lowest threshold. Binned mode finds the same pixel here: 4096 pixels in
    # bins of width <= 2 * range / 9999 leave the optimum alone in its bin.
    assert threshold == optimal.min()


@pytest.mark.parametrize("stage", ["fit_metrics", "validate", "test"])
def test_logged_metrics_match_sklearn(fitted, dataset, stage):
    metrics = fitted[stage]
    module = fitted["module"]
    maps, masks = dataset.maps().ravel(), dataset.masks.numpy().ravel().astype(int)
    scores = dataset.maps().reshape(NUM_IMAGES, -1).max(axis=1)
    labels = dataset.labels.numpy()
    assert set(metrics) >= {"image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"}
    assert metrics["image_AUROC"] == 1.0
    assert metrics["image_F1Score"] == pytest.approx(f1_score(labels, scores >= float(module.image_threshold.value)))
    assert metrics["image_F1Score"] == 1.0
    tolerance = PIXEL_AUROC_TOLERANCE[fitted["pixel_mode"]]
    assert metrics["pixel_AUROC"] == pytest.approx(roc_auc_score(masks, maps), abs=tolerance)
    assert metrics["pixel_AUROC"] < 1.0
    assert metrics["pixel_F1Score"] == pytest.approx(
        f1_score(masks, maps >= float(module.pixel_threshold.value)), abs=1e-6
    )


def test_predict_outputs_have_labels_and_masks(fitted, dataset):
    module = fitted["module"]
    predictions = fitted["predictions"]
    assert len(predictions) == NUM_IMAGES // BATCH_SIZE
    pred_labels = torch.cat([batch["pred_labels"] for batch in predictions])
    pred_masks = torch.cat([batch["pred_masks"] for batch in predictions])
    assert pred_labels.dtype == torch.bool and pred_labels.shape == (NUM_IMAGES,)
    assert pred_masks.dtype == torch.bool and pred_masks.shape == (NUM_IMAGES, 1, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(pred_labels, dataset.labels.bool())
    expected_masks = torch.from_numpy(dataset.maps() >= float(module.pixel_threshold.value))
    assert torch.equal(pred_masks, expected_masks)


def test_test_step_outputs_are_gathered_on_cpu_with_predictions(fitted):
    outputs = fitted["module"].test_step_outputs
    assert len(outputs) == NUM_IMAGES // BATCH_SIZE
    for output in outputs:
        assert {"image", "label", "mask", "anomaly_maps", "pred_scores", "pred_labels", "pred_masks"} <= set(output)
        assert all(value.device.type == "cpu" for value in output.values() if isinstance(value, torch.Tensor))


def test_min_max_statistics_cover_the_validation_maps(fitted, dataset):
    module = fitted["module"]
    assert float(module.min_max.min) == pytest.approx(dataset.maps().min(), abs=0)
    assert float(module.min_max.max) == pytest.approx(dataset.maps().max(), abs=0)


def test_state_dict_round_trip_into_a_fresh_module(fitted, dataset):
    module = fitted["module"]
    fresh = BrightnessModule(**PIXEL_MODES[fitted["pixel_mode"]])
    fresh.load_state_dict(module.state_dict())
    for name in ("image_threshold", "pixel_threshold"):
        loaded, original = getattr(fresh, name).value, getattr(module, name).value
        assert torch.equal(loaded, original)
        assert float(loaded) != 0.5  # really the fitted value, not the default
    assert torch.equal(fresh.min_max.min, module.min_max.min) and torch.equal(fresh.min_max.max, module.min_max.max)
    assert fresh.image_metrics["F1Score"].threshold == float(module.image_threshold.value)
    assert fresh.pixel_metrics["F1Score"].threshold == float(module.pixel_threshold.value)
    restored = make_trainer().predict(fresh, loader(dataset))
    for batch, original in zip(restored, fitted["predictions"], strict=True):
        for key in ("pred_scores", "anomaly_maps", "pred_labels", "pred_masks"):
            assert torch.equal(batch[key], original[key]), key


def test_without_masks_pixel_threshold_takes_the_image_threshold():
    module = BrightnessModule()
    results = make_trainer().validate(module, loader(SyntheticDefects(seed=1, with_masks=False)), verbose=False)[0]
    assert "image_AUROC" in results and "pixel_AUROC" not in results
    assert torch.equal(module.pixel_threshold.value, module.image_threshold.value)


def test_scores_only_model_predicts_labels_without_masks(dataset):
    module = BrightnessModule(scores_only=True)
    trainer = make_trainer()
    results = trainer.validate(module, loader(dataset), verbose=False)[0]
    assert results["image_AUROC"] == 1.0 and "pixel_AUROC" not in results
    predictions = trainer.predict(module, loader(dataset))
    assert all("pred_masks" not in batch for batch in predictions)
    assert torch.equal(torch.cat([batch["pred_labels"] for batch in predictions]), dataset.labels.bool())


def test_post_process_adds_max_of_each_map_without_touching_it():
    maps = torch.rand(3, 1, 5, 7)
    original = maps.clone()
    outputs = {"anomaly_maps": maps}
    AnomalyModule._post_process(outputs)
    assert torch.equal(outputs["pred_scores"], torch.from_numpy(original.numpy().reshape(3, -1).max(axis=1)))
    assert outputs["anomaly_maps"] is maps and torch.equal(maps, original)


def test_post_process_keeps_given_scores_and_needs_maps_or_scores():
    scores = torch.tensor([0.3, 0.9])
    outputs = {"anomaly_maps": torch.ones(2, 1, 2, 2), "pred_scores": scores}
    AnomalyModule._post_process(outputs)
    assert outputs["pred_scores"] is scores
    with pytest.raises(ValueError, match="anomaly_maps.*pred_scores"):
        AnomalyModule._post_process({"image": torch.zeros(1, 3, 2, 2)})


def test_outputs_to_cpu_replaces_tensors_and_keeps_other_values():
    output = {"anomaly_maps": torch.ones(1, 1, 2, 2, requires_grad=True) * 2, "path": ["a.png"]}
    AnomalyModule._outputs_to_cpu(output)
    assert output["anomaly_maps"].device.type == "cpu" and not output["anomaly_maps"].requires_grad
    assert output["path"] == ["a.png"]


def test_module_is_abstract_and_needs_a_model():
    with pytest.raises(TypeError):
        AnomalyModule()

    class NoModel(AnomalyModule):
        def validation_step(self, batch, batch_idx):
            return batch

    with pytest.raises(RuntimeError, match="self.model"):
        NoModel()(torch.zeros(1, 3, 4, 4))


def test_validation_step_must_return_a_dict():
    class ReturnsTensor(BrightnessModule):
        def validation_step(self, batch, batch_idx, *args):
            return self(batch["image"])

    module = ReturnsTensor()
    with pytest.raises(TypeError, match="validation_step must return a dict"):
        module.validation_step_end(module.validation_step({"image": torch.zeros(1, 3, 4, 4)}, 0))


def test_metrics_rank_and_threshold_raw_scores_outside_zero_one():
    # torchmetrics' default sigmoid would turn these scores into ties (AUROC 0.5).
    module = BrightnessModule()
    scores, labels = torch.tensor([20.0, 30.0, 40.0, 50.0]), torch.tensor([0, 1, 0, 1])
    module.image_threshold.value = torch.tensor(35.0)
    module._set_metric_thresholds()
    module.image_metrics.update(scores, labels)
    values = module.image_metrics.compute()
    assert float(values["image_AUROC"]) == pytest.approx(roc_auc_score(labels, scores))
    assert float(values["image_F1Score"]) == pytest.approx(f1_score(labels, scores >= 35.0))
    # A score equal to the threshold is anomalous, as in pred_labels.
    module.image_metrics.reset()
    module.image_threshold.value = torch.tensor(30.0)
    module._set_metric_thresholds()
    module.image_metrics.update(scores, labels)
    assert float(module.image_metrics.compute()["image_F1Score"]) == pytest.approx(f1_score(labels, scores >= 30.0))


# ---------------------------------------------------------------- AdaptiveThreshold on its own


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_threshold_matches_sklearn_on_overlapping_scores(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(200, generator=generator) < 0.3).long()
    # Rounded scores create ties inside the curve.
    scores = torch.round((torch.randn(200, generator=generator) + 1.2 * labels) * 8) / 8
    threshold = AdaptiveThreshold()
    for chunk_scores, chunk_labels in zip(scores.split(37), labels.split(37)):
        threshold.update(chunk_scores, chunk_labels)
    value = float(threshold.compute())
    optimal, best_f1 = brute_force_f1_thresholds(scores.numpy(), labels.numpy())
    assert value == optimal.min()
    assert f1_score(labels.numpy(), scores.numpy() >= value) == pytest.approx(best_f1, abs=1e-12)
    assert float(threshold.value) == value


def test_adaptive_threshold_ties_go_to_the_lowest_threshold():
    # t = 4: TP 1, FP 0, FN 1 -> F1 2/3;  t = 1: TP 2, FP 2, FN 0 -> F1 4/6 = 2/3; others lower.
    scores, labels = torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([1, 0, 0, 1])
    assert f1_score(labels, scores >= 4.0) == pytest.approx(f1_score(labels, scores >= 1.0))
    threshold = AdaptiveThreshold()
    threshold.update(scores, labels)
    assert float(threshold.compute()) == 1.0


def test_adaptive_threshold_without_positives_warns_and_takes_the_maximum():
    threshold = AdaptiveThreshold()
    threshold.update(torch.tensor([0.2, 3.5, 1.0]), torch.zeros(3))
    with pytest.warns(UserWarning, match="no anomalous sample"):
        assert float(threshold.compute()) == 3.5


def test_adaptive_threshold_value_survives_reset_and_state_dict():
    threshold = AdaptiveThreshold()
    threshold.update(torch.tensor([1.0, 7.0, 9.0]), torch.tensor([0, 1, 1]))
    threshold.compute()
    threshold.reset()
    assert float(threshold.value) == 7.0
    fresh = AdaptiveThreshold()
    fresh.load_state_dict(threshold.state_dict())
    assert float(fresh.value) == 7.0
    assert list(threshold.state_dict()) == ["value"]  # the collected scores are not checkpointed


def test_adaptive_threshold_rejects_bad_input():
    threshold = AdaptiveThreshold()
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(RuntimeError, match="call update"):
        threshold.compute()
    with pytest.raises(ValueError, match="same number of elements"):
        threshold.update(torch.rand(4), torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        threshold.update(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        threshold.update(torch.rand(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="finite"):
        AdaptiveThreshold(default_value=float("inf"))


def test_adaptive_threshold_does_not_modify_its_inputs():
    scores, labels = torch.tensor([0.3, 0.1, 0.2]), torch.tensor([1, 0, 0])
    threshold = AdaptiveThreshold()
    threshold.update(scores, labels)
    threshold.compute()
    assert torch.equal(scores, torch.tensor([0.3, 0.1, 0.2])) and torch.equal(labels, torch.tensor([1, 0, 0]))


# ---------------------------------------------------------------- configuration: metrics, thresholds, normalisation


def test_pixel_statistics_are_binned_with_fixed_memory_by_default(fitted):
    module = fitted["module"]
    if fitted["pixel_mode"] == "exact":
        assert module.pixel_threshold.num_bins is None and module.pixel_metrics["AUROC"].num_bins is None
        return
    for metric in (module.pixel_threshold, module.pixel_metrics["AUROC"]):
        assert metric.num_bins == 10_000
        # Three float64 values per bin and four scalars, however many pixels were seen.
        assert sum(state.numel() for state in metric.metric_state.values()) == 3 * 10_000 + 4
    assert module.image_threshold.num_bins is None  # image scores stay exact


def test_configured_metrics_are_logged_and_aupro_sees_whole_maps(dataset):
    from anomaly_kernels.metrics import AUPRO

    module = BrightnessModule(image_metrics=["AUROC"], pixel_metrics=["AUPRO", "F1Score"], pixel_num_bins=None)
    results = make_trainer().validate(module, loader(dataset), verbose=False)[0]
    assert set(results) == {"image_AUROC", "pixel_AUPRO", "pixel_F1Score"}
    # The module must hand the metric (B, 1, H, W) maps and masks batch by batch: the result
    # equals one exact AUPRO over the whole data set (itself checked against numpy in tests/metrics).
    direct = AUPRO()
    direct.update(torch.from_numpy(dataset.maps()), dataset.masks)
    assert results["pixel_AUPRO"] == pytest.approx(float(direct.compute()), abs=1e-6)
    assert 0.0 < results["pixel_AUPRO"] < 1.0


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"image_metrics": ["AUROC", "Accuracy"]}, ValueError, r"unknown metric names \['Accuracy'\].*valid names"),
        ({"pixel_metrics": ["auroc"]}, ValueError, "valid names are"),
        ({"image_metrics": ["AUPRO"]}, ValueError, "pixel_metrics"),
        ({"image_metrics": "AUROC"}, TypeError, "image_metrics must be a list"),
        ({"threshold": "fixed"}, ValueError, "'adaptive'"),
        ({"threshold": {"image": 1.0}}, ValueError, "'image' and 'pixel'"),
        ({"threshold": {"image": 1.0, "pixel": float("nan")}}, ValueError, "finite"),
        ({"threshold": 0.5}, TypeError, "threshold must be"),
        ({"normalization": "z_score"}, ValueError, "normalization must be"),
        ({"pixel_num_bins": 1}, ValueError, "pixel_num_bins must be at least 2"),
    ],
)
def test_invalid_configuration_is_rejected(options, error, message):
    with pytest.raises(error, match=message):
        BrightnessModule(**options)


def test_manual_thresholds_are_kept_through_validation(dataset):
    module = BrightnessModule(threshold={"image": 0.7, "pixel": 0.55})
    trainer = make_trainer()
    results = trainer.validate(module, loader(dataset), verbose=False)[0]
    assert float(module.image_threshold.value) == pytest.approx(0.7) and module.threshold_computations == 0
    assert float(module.pixel_threshold.value) == pytest.approx(0.55)
    maps, masks = dataset.maps(), dataset.masks.numpy().astype(int)
    scores = maps.reshape(NUM_IMAGES, -1).max(axis=1)
    threshold_image, threshold_pixel = np.float32(0.7), np.float32(0.55)
    assert results["image_F1Score"] == pytest.approx(f1_score(dataset.labels.numpy(), scores >= threshold_image))
    assert results["pixel_F1Score"] == pytest.approx(f1_score(masks.ravel(), maps.ravel() >= threshold_pixel))
    predictions = trainer.predict(module, loader(dataset))
    pred_labels = torch.cat([batch["pred_labels"] for batch in predictions]).numpy()
    assert np.array_equal(pred_labels, scores >= threshold_image)


def expected_normalized(method: str, raw: np.ndarray, threshold: float, statistics: np.ndarray) -> np.ndarray:
    """Reference normalisation in numpy/scipy; ``statistics`` are the raw validation values it is based on."""
    from scipy.stats import norm

    raw, threshold = raw.astype(np.float64), float(threshold)
    if method == "min_max":
        return np.clip((raw - threshold) / (statistics.max() - statistics.min()) + 0.5, 0.0, 1.0)
    sigma = np.std(np.log(statistics.astype(np.float64)), ddof=1)
    return norm.cdf((np.log(raw) - np.log(threshold)) / sigma)


@pytest.fixture(scope="module", params=["min_max", "cdf"])
def normalized(dataset, request):
    """Fit (validation on the data set), then predict and test with normalised outputs."""
    module = BrightnessModule(normalization=request.param)
    trainer = make_trainer()
    trainer.fit(module, loader(dataset), loader(dataset))
    return {
        "method": request.param,
        "module": module,
        "predictions": trainer.predict(module, loader(dataset)),
        "test": trainer.test(module, loader(dataset), verbose=False)[0],
    }


def test_normalized_predictions_match_the_reference_formula(normalized, dataset):
    module, method = normalized["module"], normalized["method"]
    maps = dataset.maps()
    scores = maps.reshape(NUM_IMAGES, -1).max(axis=1)
    image_threshold, pixel_threshold = float(module.image_threshold.value), float(module.pixel_threshold.value)
    pred_scores = torch.cat([batch["pred_scores"] for batch in normalized["predictions"]]).numpy()
    pred_maps = torch.cat([batch["anomaly_maps"] for batch in normalized["predictions"]]).numpy()
    # min-max uses one range over scores and maps (scores are map maxima); CDF image and pixel statistics apart.
    image_statistics = maps if method == "min_max" else scores
    assert np.allclose(pred_scores, expected_normalized(method, scores, image_threshold, image_statistics), atol=1e-6)
    assert np.allclose(pred_maps, expected_normalized(method, maps, pixel_threshold, maps), atol=1e-6)
    assert pred_scores.min() >= 0.0 and pred_scores.max() <= 1.0


def test_normalized_thresholds_are_one_half_and_keep_every_decision(normalized, dataset):
    module = normalized["module"]
    maps = dataset.maps()
    scores = maps.reshape(NUM_IMAGES, -1).max(axis=1)
    image_threshold, pixel_threshold = module.image_threshold.value.numpy(), module.pixel_threshold.value.numpy()
    pred_scores = torch.cat([batch["pred_scores"] for batch in normalized["predictions"]]).numpy()
    pred_maps = torch.cat([batch["anomaly_maps"] for batch in normalized["predictions"]]).numpy()
    pred_labels = torch.cat([batch["pred_labels"] for batch in normalized["predictions"]]).numpy()
    pred_masks = torch.cat([batch["pred_masks"] for batch in normalized["predictions"]]).numpy()
    assert np.array_equal(pred_labels, scores >= image_threshold) and np.array_equal(pred_labels, pred_scores >= 0.5)
    assert np.array_equal(pred_masks, maps >= pixel_threshold) and np.array_equal(pred_masks, pred_maps >= 0.5)
    # Test metrics are taken on the normalised outputs at 0.5: F1 equals the raw F1 at the raw thresholds.
    masks, labels = dataset.masks.numpy().astype(int).ravel(), dataset.labels.numpy()
    assert normalized["test"]["image_F1Score"] == pytest.approx(f1_score(labels, scores >= image_threshold))
    assert normalized["test"]["pixel_F1Score"] == pytest.approx(f1_score(masks, maps.ravel() >= pixel_threshold))
    assert normalized["test"]["pixel_AUROC"] == pytest.approx(roc_auc_score(masks, pred_maps.ravel()), abs=1e-3)
    assert all(metric.threshold == 0.5 for metric in module.image_metrics.values() if hasattr(metric, "threshold"))


def test_normalized_module_restores_from_state_dict(normalized, dataset):
    module = normalized["module"]
    fresh = BrightnessModule(normalization=normalized["method"])
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh.image_threshold.value, module.image_threshold.value)
    assert torch.equal(fresh.pixel_threshold.value, module.pixel_threshold.value)
    predictions = make_trainer().predict(fresh, loader(dataset))
    for restored, original in zip(predictions, normalized["predictions"], strict=True):
        for key in ("pred_scores", "anomaly_maps", "pred_labels", "pred_masks"):
            assert torch.equal(restored[key], original[key]), key


def test_normalization_without_statistics_is_a_clear_error(dataset):
    for method in ("min_max", "cdf"):
        module = BrightnessModule(normalization=method)
        batch = next(iter(loader(dataset)))
        with pytest.raises(RuntimeError, match="statistics of a validation epoch"):
            module.predict_step(batch, 0)


def test_cdf_normalization_needs_positive_scores():
    module = BrightnessModule(normalization="cdf")
    outputs = {"label": torch.tensor([0, 1]), "anomaly_maps": torch.zeros(2, 1, 2, 2)}
    with pytest.raises(ValueError, match="positive"):
        module.validation_step_end(outputs)
