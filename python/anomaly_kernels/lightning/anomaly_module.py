"""AnomalyModule: the Lightning base class that turns anomaly maps/scores into thresholds and metrics."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection

from anomaly_kernels.metrics import (
    METRIC_NAMES,
    AdaptiveThreshold,
    AnomalyScoreDistribution,
    MinMax,
    ThresholdF1Score,
    create_metric_collection,
    normalize_cdf,
    normalize_min_max,
)
from anomaly_kernels.metrics._inputs import check_num_bins

__all__ = ["AnomalyModule", "MinMax", "ThresholdF1Score"]

NORMALIZATION_METHODS = ("min_max", "cdf")
# Metrics that need the spatial structure of maps and masks: pixel-level only.
_PIXEL_ONLY_METRICS = ("AUPRO",)


def _sync_thresholds_after_load(module: "AnomalyModule", _incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: F1 metrics follow the loaded thresholds."""
    module._set_metric_thresholds()


def _updated(collection: MetricCollection) -> bool:
    return any(metric.update_called for metric in collection.values())


def _metric_names(names: Any, argument: str) -> list[str]:
    """``names`` as a list of metric names, or a TypeError naming ``argument``."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"{argument} must be a list or tuple of metric names from {list(METRIC_NAMES)}, got {names!r}")
    return list(names)


def _manual_thresholds(threshold: Any) -> Optional[Dict[str, float]]:
    """``None`` for ``"adaptive"``, else the validated ``{"image": float, "pixel": float}``."""
    if isinstance(threshold, str):
        if threshold != "adaptive":
            raise ValueError(
                f"threshold must be 'adaptive' or a dict {{'image': float, 'pixel': float}}, got {threshold!r}"
            )
        return None
    if not isinstance(threshold, dict):
        raise TypeError(
            f"threshold must be 'adaptive' or a dict {{'image': float, 'pixel': float}}, got {type(threshold).__name__}"
        )
    if set(threshold) != {"image", "pixel"}:
        raise ValueError(f"manual thresholds need exactly the keys 'image' and 'pixel', got {sorted(threshold)}")
    values = {}
    for level, value in threshold.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"threshold[{level!r}] must be a real number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"threshold[{level!r}] must be finite, got {value}")
        values[level] = float(value)
    return values


class AnomalyModule(pl.LightningModule, ABC):
    """AnomalyModule to train, validate, predict and test images.

    Acts as a base class for all the Anomaly Modules in the library. Subclasses assign an
    ``nn.Module`` to ``self.model`` and implement ``validation_step``, which returns the batch
    dict (``image`` (B, 3, H, W), ``label`` (B,), optional ``mask`` (B, 1, H, W) or (B, H, W))
    with ``anomaly_maps`` (B, 1, H, W) and/or ``pred_scores`` (B,) added.

    Epoch-end work under Lightning 2: Lightning 2 removed ``validation_epoch_end`` and
    ``test_epoch_end`` and refuses modules that define them, so this class defines neither.
    Instead ``on_validation_batch_end`` / ``on_test_batch_end`` pass each step output through
    ``validation_step_end`` / ``test_step_end`` (tensors to CPU, ``pred_scores`` derived) and
    append it to ``validation_step_outputs`` / ``test_step_outputs``; these lists are cleared
    at the start of every epoch and hold the last epoch's outputs afterwards.
    ``on_validation_epoch_end`` computes the adaptive thresholds from them, then the metrics,
    and logs the metrics; ``on_test_epoch_end`` computes and logs the metrics with the
    thresholds found in validation. Subclasses overriding these hooks must call ``super()``.
    The sanity-check validation that Lightning runs before training only collects outputs: a
    threshold from two batches would be meaningless. Thresholds and metrics are computed on CPU,
    where the gathered outputs live; metrics rank and threshold the raw scores (no sigmoid), so
    scores on any scale are handled.

    Thresholds, metrics and normalisation (the metrics live in :mod:`anomaly_kernels.metrics`):

    - Image level: exact :class:`AdaptiveThreshold` and metrics over every image score.
    - Pixel level: binned by default (``pixel_num_bins=10_000``): the pixel threshold, AUROC and
      AUPRO keep fixed-size histograms instead of every pixel of the validation set; the
      threshold is still a collected score whose F1 is exact, and results match the exact
      computation unless pixels around the optimum share a bin (bins are at most
      ``2 · (max - min) / (pixel_num_bins - 1)`` wide). ``pixel_num_bins=None`` keeps every pixel.
      (The epoch's step outputs are still gathered in ``validation_step_outputs`` as described
      above; the binned statistics add no per-pixel copy of them.)
    - ``threshold="adaptive"``: validation sets F1-optimal thresholds; a dict
      ``{"image": float, "pixel": float}`` fixes them (validation leaves them alone).
    - ``normalization``: ``None`` leaves scores raw. ``"min_max"`` maps scores with
      ``clamp((x - threshold) / (max - min) + 0.5, 0, 1)`` using the running extremes of the
      validation scores and maps (:attr:`min_max`); ``"cdf"`` standardises log scores with the
      validation statistics (:attr:`score_distribution`, image and pixel separately) and maps
      them through the standard normal CDF, centred on the threshold. Either way the outputs of
      ``predict_step``/``test_step`` carry normalised ``pred_scores``/``anomaly_maps``, both
      thresholds become 0.5 for ``pred_labels``/``pred_masks`` and the test metrics, and
      ``normalised >= 0.5`` holds exactly when ``raw >= threshold``. Validation (thresholds and
      its metrics) always works on raw scores. As in anomalib 0.3, clipping (min-max) and CDF
      saturation can tie extreme test scores, which the test AUROC then counts as ties.

    Args:
        image_metrics: names of the image metrics (from ``METRIC_NAMES`` except ``"AUPRO"``).
        pixel_metrics: names of the pixel metrics (``"F1Score"``, ``"AUROC"``, ``"AUPRO"``).
        threshold: ``"adaptive"`` or ``{"image": float, "pixel": float}``.
        normalization: ``None``, ``"min_max"`` or ``"cdf"`` (needs positive scores).
        pixel_num_bins: histogram size of the pixel threshold and pixel curve metrics, or
            ``None`` for exact pixel statistics (memory grows with the number of pixels).

    Attributes:
        model: the ``nn.Module`` computing anomaly maps/scores, set by subclasses.
        image_threshold, pixel_threshold: :class:`AdaptiveThreshold` (F1-optimal threshold of
            image scores against labels, of anomaly maps against masks); their ``value`` is
            persistent and always in raw score units. Without masks or maps the pixel threshold
            takes the image threshold. Both hold 0.5 (or the manual values) until the first
            validation epoch.
        image_metrics, pixel_metrics: ``MetricCollection`` built by
            :func:`create_metric_collection`, logged as ``image_F1Score``, ``image_AUROC``,
            ``pixel_F1Score``, ``pixel_AUROC``, ``pixel_AUPRO``, ... Pixel metrics are computed
            only when outputs carry masks and maps.
        min_max: :class:`MinMax` statistics (persistent) of the validation ``pred_scores`` and
            ``anomaly_maps``, collected in ``validation_step_end``.
        score_distribution: :class:`AnomalyScoreDistribution` (persistent) of the log validation
            scores and maps, collected in ``validation_step_end`` when ``normalization="cdf"``.
        adaptive_threshold: whether validation recomputes the thresholds (``threshold="adaptive"``).
        normalization, pixel_num_bins: the constructor arguments.
        validation_step_outputs, test_step_outputs: the step outputs of the current/last epoch.
    """

    def __init__(
        self,
        image_metrics: Sequence[str] = ("F1Score", "AUROC"),
        pixel_metrics: Sequence[str] = ("F1Score", "AUROC"),
        threshold: Union[str, Dict[str, float]] = "adaptive",
        normalization: Optional[str] = None,
        pixel_num_bins: Optional[int] = 10_000,
    ) -> None:
        super().__init__()
        image_names = _metric_names(image_metrics, "image_metrics")
        pixel_names = _metric_names(pixel_metrics, "pixel_metrics")
        pixel_only = [name for name in image_names if name in _PIXEL_ONLY_METRICS]
        if pixel_only:
            raise ValueError(f"{pixel_only} need anomaly maps and masks: list them in pixel_metrics, not image_metrics")
        manual = _manual_thresholds(threshold)
        if normalization is not None and normalization not in NORMALIZATION_METHODS:
            raise ValueError(
                f"normalization must be None or one of {list(NORMALIZATION_METHODS)}, got {normalization!r}"
            )
        self.pixel_num_bins = check_num_bins(pixel_num_bins, "pixel_num_bins")
        self.normalization = normalization
        self.adaptive_threshold = manual is None
        self.model: Optional[nn.Module] = None
        self.image_threshold = AdaptiveThreshold(default_value=manual["image"] if manual else 0.5)
        self.pixel_threshold = AdaptiveThreshold(
            default_value=manual["pixel"] if manual else 0.5, num_bins=self.pixel_num_bins
        )
        self.min_max = MinMax()
        self.score_distribution = AnomalyScoreDistribution()
        self.image_metrics = create_metric_collection(image_names, "image_")
        self.pixel_metrics = create_metric_collection(pixel_names, "pixel_", num_bins=self.pixel_num_bins)
        self.validation_step_outputs: List[Dict[str, Any]] = []
        self.test_step_outputs: List[Dict[str, Any]] = []
        self.register_load_state_dict_post_hook(_sync_thresholds_after_load)
        self._set_metric_thresholds()

    def forward(self, batch: torch.Tensor) -> Any:
        """Forward-pass input tensor to the module.

        Args:
            batch: input tensor, e.g. images (B, 3, H, W).

        Returns:
            Output of ``self.model``.

        Raises:
            RuntimeError: the subclass did not set ``self.model``.
        """
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} must assign an nn.Module to self.model before forward")
        return self.model(batch)

    @abstractmethod
    def validation_step(self, batch: Dict[str, Any], batch_idx: int, *args, **kwargs) -> Dict[str, Any]:
        """Compute anomaly maps and/or scores of a batch; to be implemented in the subclasses.

        Args:
            batch: dict with ``image`` (B, 3, H, W), ``label`` (B,) and optional ``mask``.
            batch_idx: index of the batch.

        Returns:
            The batch dict with ``anomaly_maps`` (B, 1, H, W) and/or ``pred_scores`` (B,) added.
        """

    def predict_step(self, batch: Any, batch_idx: int, _dataloader_idx: Optional[int] = None) -> Any:
        """Step function called during :meth:`pytorch_lightning.Trainer.predict`.

        Runs ``validation_step``, derives ``pred_scores`` when absent (``_post_process``),
        normalises ``pred_scores`` and ``anomaly_maps`` when ``normalization`` is set (new
        tensors; the model's are not modified) and adds ``pred_labels = pred_scores >= t_image``
        (B,) bool and, with maps, ``pred_masks = anomaly_maps >= t_pixel`` (B, 1, H, W) bool,
        where the thresholds are ``image_threshold.value`` / ``pixel_threshold.value``, or 0.5
        for normalised outputs.

        Args:
            batch: current batch (dict with ``image``).
            batch_idx: index of the current batch.
            _dataloader_idx: index of the current dataloader (unused).

        Returns:
            The output dict of ``validation_step`` with the predictions added.

        Raises:
            RuntimeError: ``normalization`` is set but no validation epoch (or checkpoint)
                provided its statistics.
        """
        outputs = self.validation_step(batch, batch_idx)
        self._check_outputs(outputs, "validation_step")
        self._post_process(outputs)
        self._normalize(outputs)
        image_threshold, pixel_threshold = self._prediction_thresholds()
        scores = outputs["pred_scores"]
        outputs["pred_labels"] = scores >= image_threshold.to(scores.device)
        if "anomaly_maps" in outputs:
            maps = outputs["anomaly_maps"]
            outputs["pred_masks"] = maps >= pixel_threshold.to(maps.device)
        return outputs

    def test_step(self, batch: Any, _: int, dataloader_idx: int = 0) -> Any:
        """Calls validation_step for anomaly map/score calculation, then adds the predictions.

        Args:
            batch: input batch (dict with ``image``, ``label``, optional ``mask``).
            _: index of the batch.
            dataloader_idx: index of the dataloader (Lightning passes it with several).

        Returns:
            Dictionary containing images, anomaly maps/scores, true labels and masks, and
            ``pred_labels`` / ``pred_masks`` as in :meth:`predict_step` (scores and maps
            normalised when ``normalization`` is set). These are gathered in
            ``test_step_outputs`` for the epoch-end metrics.
        """
        return self.predict_step(batch, _, dataloader_idx)

    def validation_step_end(self, val_step_outputs: Dict[str, Any]) -> Dict[str, Any]:
        """Called at the end of each validation step (from ``on_validation_batch_end``).

        Moves the output tensors to CPU, derives ``pred_scores`` (B,) from ``anomaly_maps``
        (B, 1, H, W) when absent and folds scores and maps into the ``min_max`` statistics and,
        for ``normalization="cdf"``, into the ``score_distribution`` statistics.

        Args:
            val_step_outputs: output dict of ``validation_step``; updated in place.

        Returns:
            The same dict.
        """
        self._check_outputs(val_step_outputs, "validation_step")
        self._outputs_to_cpu(val_step_outputs)
        self._post_process(val_step_outputs)
        self.min_max.update(val_step_outputs["pred_scores"])
        if "anomaly_maps" in val_step_outputs:
            self.min_max.update(val_step_outputs["anomaly_maps"])
        if self.normalization == "cdf":
            self.score_distribution.update(
                anomaly_scores=val_step_outputs["pred_scores"], anomaly_maps=val_step_outputs.get("anomaly_maps")
            )
        return val_step_outputs

    def test_step_end(self, test_step_outputs: Dict[str, Any]) -> Dict[str, Any]:
        """Called at the end of each test step (from ``on_test_batch_end``).

        Moves the output tensors to CPU and derives ``pred_scores`` (B,) when absent.

        Args:
            test_step_outputs: output dict of ``test_step``; updated in place.

        Returns:
            The same dict.
        """
        self._check_outputs(test_step_outputs, "test_step")
        self._outputs_to_cpu(test_step_outputs)
        self._post_process(test_step_outputs)
        return test_step_outputs

    def on_validation_epoch_start(self) -> None:
        """Start a validation epoch: clear the gathered outputs and the normalisation statistics."""
        self.validation_step_outputs = []
        self.min_max.reset()
        self.score_distribution.reset()

    def on_validation_batch_end(
        self, outputs: Dict[str, Any], batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Pass the output of ``validation_step`` through ``validation_step_end`` and keep it."""
        self.validation_step_outputs.append(self.validation_step_end(outputs))

    def on_validation_epoch_end(self) -> None:
        """Compute the adaptive thresholds and the metrics of the epoch's outputs, and log the metrics.

        With manual thresholds only the metrics are computed. Validation metrics use raw scores.

        Replaces the ``validation_epoch_end(outputs)`` of Lightning 1, which Lightning 2 removed.
        """
        if self._trainer is not None and self._trainer.sanity_checking:
            return
        outputs = self.validation_step_outputs
        if not outputs:
            return
        if self.adaptive_threshold:
            self._compute_adaptive_threshold(outputs)
        self._compute_metrics(outputs)
        self._log_metrics()

    def on_test_epoch_start(self) -> None:
        """Start a test epoch: clear the gathered outputs."""
        self.test_step_outputs = []

    def on_test_batch_end(self, outputs: Dict[str, Any], batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Pass the output of ``test_step`` through ``test_step_end`` and keep it."""
        self.test_step_outputs.append(self.test_step_end(outputs))

    def on_test_epoch_end(self) -> None:
        """Compute and log the metrics of the test outputs at the thresholds found in validation.

        Normalised test outputs are scored at the normalised thresholds (0.5).

        Replaces the ``test_epoch_end(outputs)`` of Lightning 1, which Lightning 2 removed.
        """
        outputs = self.test_step_outputs
        if not outputs:
            return
        self._compute_metrics(outputs, normalized=self.normalization is not None)
        self._log_metrics()

    def _compute_adaptive_threshold(self, outputs: List[Dict[str, Any]], pixel_data: Optional[bool] = None) -> None:
        """Set ``image_threshold`` / ``pixel_threshold`` to the F1-optimal thresholds of ``outputs``.

        Args:
            outputs: step outputs with ``pred_scores`` (B,) and ``label`` (B,), optionally
                ``anomaly_maps`` (B, 1, H, W) and ``mask``. Without pixel data the pixel
                threshold takes the image threshold.
            pixel_data: whether there is pixel data; ``None``: whether ``outputs`` fed the
                pixel threshold (several processes pass the answer agreed by all ranks).
        """
        self.image_threshold.reset()
        self.pixel_threshold.reset()
        self._collect_outputs(self.image_threshold, self.pixel_threshold, outputs)
        self.image_threshold.compute()
        if pixel_data is None:
            pixel_data = self.pixel_threshold.update_called
        if pixel_data:
            self.pixel_threshold.compute()
        else:
            self.pixel_threshold.value = self.image_threshold.value.detach().clone()
        self._set_metric_thresholds()

    def _compute_metrics(self, outputs: List[Dict[str, Any]], normalized: bool = False) -> None:
        """Reset the metric collections and fill them with ``outputs`` at the current thresholds.

        Args:
            outputs: step outputs (see :meth:`_collect_outputs`).
            normalized: the outputs carry normalised scores: F1 is taken at 0.5.
        """
        self.image_metrics.reset()
        self.pixel_metrics.reset()
        self._set_metric_thresholds(normalized)
        self._collect_outputs(self.image_metrics, self.pixel_metrics, outputs)

    def _set_metric_thresholds(self, normalized: bool = False) -> None:
        """Give every F1 metric the current threshold (image or pixel), or 0.5 for normalised scores."""
        for collection, threshold in (
            (self.image_metrics, self.image_threshold),
            (self.pixel_metrics, self.pixel_threshold),
        ):
            for metric in collection.values():
                if isinstance(metric, ThresholdF1Score):
                    metric.threshold = 0.5 if normalized else float(threshold.value)

    def _prediction_thresholds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Thresholds of ``pred_labels``/``pred_masks``: the raw values, or 0.5 with normalisation."""
        if self.normalization is not None:
            half = torch.tensor(0.5)
            return half, half
        return self.image_threshold.value, self.pixel_threshold.value

    def _normalize(self, outputs: Dict[str, Any]) -> Dict[str, Any]:
        """Replace ``pred_scores`` (B,) and ``anomaly_maps`` (B, 1, H, W) by their normalised values.

        Does nothing when ``normalization`` is ``None``. The image threshold normalises scores,
        the pixel threshold maps; new tensors replace the entries (the dict is updated in place).

        Raises:
            RuntimeError: the statistics were never collected (no validation epoch, no checkpoint).
        """
        if self.normalization is None:
            return outputs
        image_threshold, pixel_threshold = float(self.image_threshold.value), float(self.pixel_threshold.value)
        has_maps = "anomaly_maps" in outputs
        if self.normalization == "min_max":
            low, high = float(self.min_max.min), float(self.min_max.max)
            if not (math.isfinite(low) and math.isfinite(high)):
                raise RuntimeError(self._missing_statistics_message())
            outputs["pred_scores"] = normalize_min_max(outputs["pred_scores"], image_threshold, low, high)
            if has_maps:
                outputs["anomaly_maps"] = normalize_min_max(outputs["anomaly_maps"], pixel_threshold, low, high)
            return outputs
        statistics = self.score_distribution.statistics()
        needed = [statistics.image_mean, statistics.image_std]
        if has_maps:
            needed += [statistics.pixel_mean, statistics.pixel_std]
        if not all(math.isfinite(float(value)) for value in needed):
            raise RuntimeError(self._missing_statistics_message())
        outputs["pred_scores"] = normalize_cdf(
            outputs["pred_scores"], image_threshold, statistics.image_mean, statistics.image_std
        )
        if has_maps:
            outputs["anomaly_maps"] = normalize_cdf(
                outputs["anomaly_maps"], pixel_threshold, statistics.pixel_mean, statistics.pixel_std
            )
        return outputs

    def _missing_statistics_message(self) -> str:
        return (
            f"normalization={self.normalization!r} needs the statistics of a validation epoch (image scores and, "
            "for anomaly maps, pixel scores; two samples at least for 'cdf'): run Trainer.fit or Trainer.validate, "
            "or load a checkpoint, before predict or test"
        )

    @staticmethod
    def _collect_outputs(image_metric: Metric, pixel_metric: Metric, outputs: List[Dict[str, Any]]) -> None:
        """Update ``image_metric`` with scores vs labels and ``pixel_metric`` with maps vs masks.

        Both metrics are moved to CPU, where ``validation_step_end`` put the outputs. The pixel
        metric is updated only by outputs that carry both ``mask`` and ``anomaly_maps``; it gets
        the maps as they are (B, 1, H, W) and the masks in the same shape, so region metrics
        (AUPRO) see the images.

        Args:
            image_metric: metric (or collection) taking ``(scores (B,), labels (B,))``.
            pixel_metric: metric (or collection) taking ``(maps (B, 1, H, W), masks (B, 1, H, W))``.
            outputs: list of step-output dicts with ``pred_scores`` and ``label``.

        Raises:
            ValueError: an output lacks ``label`` or ``pred_scores``, or masks and maps differ
                in size.
        """
        image_metric.cpu()
        pixel_metric.cpu()
        for output in outputs:
            for key in ("pred_scores", "label"):
                if key not in output:
                    raise ValueError(
                        f"step outputs need '{key}' to compute thresholds and metrics, got keys {sorted(output)}"
                    )
            scores, labels = output["pred_scores"].flatten(), torch.as_tensor(output["label"]).flatten()
            if scores.numel() != labels.numel():
                raise ValueError(f"pred_scores has {scores.numel()} entries but label has {labels.numel()}")
            image_metric.update(scores.cpu(), labels.int().cpu())
            if "mask" in output and "anomaly_maps" in output:
                maps, masks = output["anomaly_maps"], torch.as_tensor(output["mask"])
                if maps.numel() != masks.numel():
                    raise ValueError(
                        f"anomaly_maps {tuple(maps.shape)} and mask {tuple(masks.shape)} "
                        "must have the same number of elements"
                    )
                pixel_metric.update(maps.cpu(), masks.reshape(maps.shape).int().cpu())

    @staticmethod
    def _post_process(outputs: Dict[str, Any]) -> Dict[str, Any]:
        """Compute image scores from the model predictions when the model gave only maps.

        Adds ``pred_scores`` (B,) = maximum of each anomaly map (B, 1, H, W) when ``pred_scores``
        is absent. The maps themselves are not modified.

        Args:
            outputs: step-output dict; updated in place.

        Returns:
            The same dict.

        Raises:
            ValueError: neither ``anomaly_maps`` nor ``pred_scores`` is present.
        """
        if "pred_scores" not in outputs:
            if "anomaly_maps" not in outputs:
                raise ValueError(
                    f"step outputs need 'anomaly_maps' (B, 1, H, W) or 'pred_scores' (B,), got keys {sorted(outputs)}"
                )
            maps = outputs["anomaly_maps"]
            outputs["pred_scores"] = maps.reshape(maps.shape[0], -1).amax(dim=1)
        return outputs

    @staticmethod
    def _outputs_to_cpu(output: Dict[str, Any]) -> Dict[str, Any]:
        """Replace every tensor of ``output`` by a detached CPU copy (the dict is updated in place).

        Gathered epoch outputs then hold no device memory and no autograd graph.
        """
        for key, value in output.items():
            if isinstance(value, torch.Tensor):
                output[key] = value.detach().cpu()
        return output

    def _log_metrics(self, pixel_data: Optional[bool] = None) -> None:
        """Log computed performance metrics: image metrics, and pixel metrics when there is pixel data.

        Args:
            pixel_data: ``None``: whether the pixel metrics were updated (several processes pass
                the answer agreed by all ranks).
        """
        if pixel_data is None:
            pixel_data = _updated(self.pixel_metrics)
        if pixel_data and len(self.pixel_metrics) > 0:
            self.log_dict(self.pixel_metrics.compute(), prog_bar=True)
            self.log_dict(self.image_metrics.compute(), prog_bar=False)
        else:
            self.log_dict(self.image_metrics.compute(), prog_bar=True)

    @staticmethod
    def _check_outputs(outputs: Any, step: str) -> None:
        """Raise a TypeError naming ``step`` unless its ``outputs`` are a dict."""
        if not isinstance(outputs, dict):
            raise TypeError(f"{step} must return a dict of tensors, got {type(outputs).__name__}")
