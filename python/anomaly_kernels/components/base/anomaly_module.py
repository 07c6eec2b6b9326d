"""AnomalyModule: the Lightning base class that turns anomaly maps/scores into thresholds and metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryF1Score

from anomaly_kernels.components.base.adaptive_threshold import AdaptiveThreshold


class ThresholdF1Score(BinaryF1Score):
    """Binary F1 of the prediction ``score >= threshold``, with the threshold in score units.

    :class:`torchmetrics.classification.BinaryF1Score` squashes scores outside [0, 1] with a
    sigmoid and predicts ``score > threshold``. Anomaly scores are distances or densities on any
    scale and the adaptive threshold is one of the scores, so this metric compares the raw score
    with ``>=`` (the rule of ``pred_labels``) and accepts any real ``threshold``. The threshold is
    applied in ``update``: set it before updating.

    Args:
        threshold: any real number.
        **kwargs: passed to :class:`BinaryF1Score`.
    """

    def __init__(self, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(threshold=0.5, **kwargs)
        self.threshold = float(threshold)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count TP/FP/FN of ``preds >= threshold`` against ``target`` (same shape, values 0/1)."""
        super().update((preds >= self.threshold).long(), target)


class MinMax(Metric):
    """Running minimum and maximum of anomaly scores and maps: the min-max normalisation statistics.

    Attributes:
        min: 0-dim float32 state, +inf until updated; persistent (saved in ``state_dict``).
        max: 0-dim float32 state, -inf until updated; persistent.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("min", default=torch.tensor(float("inf")), dist_reduce_fx="min", persistent=True)
        self.add_state("max", default=torch.tensor(float("-inf")), dist_reduce_fx="max", persistent=True)

    def update(self, predictions: torch.Tensor) -> None:
        """Fold ``predictions`` (any shape; empty tensors are ignored) into the running extremes."""
        if predictions.numel() == 0:
            return
        # Reduce where the values are, move only the two extremes.
        low, high = predictions.detach().aminmax()
        self.min = torch.minimum(self.min, low.to(device=self.min.device, dtype=self.min.dtype))
        self.max = torch.maximum(self.max, high.to(device=self.max.device, dtype=self.max.dtype))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(min, max)`` as 0-dim tensors."""
        return self.min, self.max


def _default_metrics(prefix: str) -> MetricCollection:
    """F1 (at the adaptive threshold) and AUROC of raw scores, logged as ``<prefix>F1Score`` / ``<prefix>AUROC``."""
    return MetricCollection(
        {
            "F1Score": ThresholdF1Score(),
            # normalization=None: rank the raw scores; the default sigmoid saturates large
            # anomaly scores into ties and would change the AUROC.
            "AUROC": BinaryAUROC(normalization=None),
        },
        prefix=prefix,
        compute_groups=False,
    )


def _sync_thresholds_after_load(module: "AnomalyModule", _incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: F1 metrics follow the loaded thresholds."""
    module._set_metric_thresholds()


def _updated(collection: MetricCollection) -> bool:
    return any(metric.update_called for metric in collection.values())


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

    Attributes:
        model: the ``nn.Module`` computing anomaly maps/scores, set by subclasses.
        image_threshold, pixel_threshold: :class:`AdaptiveThreshold` (F1-optimal threshold of
            image scores against labels, of anomaly maps against masks); their ``value`` is
            persistent. Without masks or maps the pixel threshold takes the image threshold.
            Both hold 0.5 until the first validation epoch.
        image_metrics, pixel_metrics: ``MetricCollection`` of F1 (at the adaptive threshold) and
            AUROC, logged as ``image_F1Score``, ``image_AUROC``, ``pixel_F1Score``,
            ``pixel_AUROC``. Pixel metrics are computed only when outputs carry masks and maps.
        min_max: :class:`MinMax` statistics (persistent) of the validation ``pred_scores`` and
            ``anomaly_maps``, collected in ``validation_step_end`` for min-max normalisation;
            nothing is normalised by this class.
        validation_step_outputs, test_step_outputs: the step outputs of the current/last epoch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.model: Optional[nn.Module] = None
        self.image_threshold = AdaptiveThreshold(default_value=0.5)
        self.pixel_threshold = AdaptiveThreshold(default_value=0.5)
        self.min_max = MinMax()
        self.image_metrics = _default_metrics("image_")
        self.pixel_metrics = _default_metrics("pixel_")
        self.validation_step_outputs: List[Dict[str, Any]] = []
        self.test_step_outputs: List[Dict[str, Any]] = []
        self.register_load_state_dict_post_hook(_sync_thresholds_after_load)

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

        Runs ``validation_step``, derives ``pred_scores`` when absent (``_post_process``) and adds
        ``pred_labels = pred_scores >= image_threshold.value`` (B,) bool and, with maps,
        ``pred_masks = anomaly_maps >= pixel_threshold.value`` (B, 1, H, W) bool.

        Args:
            batch: current batch (dict with ``image``).
            batch_idx: index of the current batch.
            _dataloader_idx: index of the current dataloader (unused).

        Returns:
            The output dict of ``validation_step`` with the predictions added.
        """
        outputs = self.validation_step(batch, batch_idx)
        self._check_outputs(outputs, "validation_step")
        self._post_process(outputs)
        scores = outputs["pred_scores"]
        outputs["pred_labels"] = scores >= self.image_threshold.value.to(scores.device)
        if "anomaly_maps" in outputs:
            maps = outputs["anomaly_maps"]
            outputs["pred_masks"] = maps >= self.pixel_threshold.value.to(maps.device)
        return outputs

    def test_step(self, batch: Any, _: int, dataloader_idx: int = 0) -> Any:
        """Calls validation_step for anomaly map/score calculation, then adds the predictions.

        Args:
            batch: input batch (dict with ``image``, ``label``, optional ``mask``).
            _: index of the batch.
            dataloader_idx: index of the dataloader (Lightning passes it with several).

        Returns:
            Dictionary containing images, anomaly maps/scores, true labels and masks, and
            ``pred_labels`` / ``pred_masks`` as in :meth:`predict_step`. These are gathered in
            ``test_step_outputs`` for the epoch-end metrics.
        """
        return self.predict_step(batch, _, dataloader_idx)

    def validation_step_end(self, val_step_outputs: Dict[str, Any]) -> Dict[str, Any]:
        """Called at the end of each validation step (from ``on_validation_batch_end``).

        Moves the output tensors to CPU, derives ``pred_scores`` (B,) from ``anomaly_maps``
        (B, 1, H, W) when absent and folds scores and maps into the ``min_max`` statistics.

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
        """Start a validation epoch: clear the gathered outputs and the min-max statistics."""
        self.validation_step_outputs = []
        self.min_max.reset()

    def on_validation_batch_end(
        self, outputs: Dict[str, Any], batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Pass the output of ``validation_step`` through ``validation_step_end`` and keep it."""
        self.validation_step_outputs.append(self.validation_step_end(outputs))

    def on_validation_epoch_end(self) -> None:
        """Compute the adaptive thresholds and the metrics of the epoch's outputs, and log the metrics.

        Replaces the ``validation_epoch_end(outputs)`` of Lightning 1, which Lightning 2 removed.
        """
        if self._trainer is not None and self._trainer.sanity_checking:
            return
        outputs = self.validation_step_outputs
        if not outputs:
            return
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

        Replaces the ``test_epoch_end(outputs)`` of Lightning 1, which Lightning 2 removed.
        """
        outputs = self.test_step_outputs
        if not outputs:
            return
        self._compute_metrics(outputs)
        self._log_metrics()

    def _compute_adaptive_threshold(self, outputs: List[Dict[str, Any]]) -> None:
        """Set ``image_threshold`` / ``pixel_threshold`` to the F1-optimal thresholds of ``outputs``.

        Args:
            outputs: step outputs with ``pred_scores`` (B,) and ``label`` (B,), optionally
                ``anomaly_maps`` (B, 1, H, W) and ``mask``. Without pixel data the pixel
                threshold takes the image threshold.
        """
        self.image_threshold.reset()
        self.pixel_threshold.reset()
        self._collect_outputs(self.image_threshold, self.pixel_threshold, outputs)
        self.image_threshold.compute()
        if self.pixel_threshold.update_called:
            self.pixel_threshold.compute()
        else:
            self.pixel_threshold.value = self.image_threshold.value.detach().clone()
        self._set_metric_thresholds()

    def _compute_metrics(self, outputs: List[Dict[str, Any]]) -> None:
        """Reset the metric collections and fill them with ``outputs`` at the current thresholds."""
        self.image_metrics.reset()
        self.pixel_metrics.reset()
        self._set_metric_thresholds()
        self._collect_outputs(self.image_metrics, self.pixel_metrics, outputs)

    def _set_metric_thresholds(self) -> None:
        """Give every F1 metric the current adaptive threshold (image or pixel)."""
        for collection, threshold in (
            (self.image_metrics, self.image_threshold),
            (self.pixel_metrics, self.pixel_threshold),
        ):
            for metric in collection.values():
                if isinstance(metric, ThresholdF1Score):
                    metric.threshold = float(threshold.value)

    @staticmethod
    def _collect_outputs(image_metric: Metric, pixel_metric: Metric, outputs: List[Dict[str, Any]]) -> None:
        """Update ``image_metric`` with scores vs labels and ``pixel_metric`` with maps vs masks.

        Both metrics are moved to CPU, where ``validation_step_end`` put the outputs. The pixel
        metric is updated only by outputs that carry both ``mask`` and ``anomaly_maps``.

        Args:
            image_metric: metric (or collection) taking ``(scores (N,), labels (N,))``.
            pixel_metric: metric (or collection) taking ``(map values (N,), mask values (N,))``.
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
                maps, masks = output["anomaly_maps"].flatten(), output["mask"].flatten()
                if maps.numel() != masks.numel():
                    raise ValueError(
                        f"anomaly_maps {tuple(output['anomaly_maps'].shape)} and mask {tuple(output['mask'].shape)} "
                        "must have the same number of elements"
                    )
                pixel_metric.update(maps.cpu(), masks.int().cpu())

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

    def _log_metrics(self) -> None:
        """Log computed performance metrics: image metrics, and pixel metrics when they were updated."""
        if _updated(self.pixel_metrics):
            self.log_dict(self.pixel_metrics.compute(), prog_bar=True)
            self.log_dict(self.image_metrics.compute(), prog_bar=False)
        else:
            self.log_dict(self.image_metrics.compute(), prog_bar=True)

    @staticmethod
    def _check_outputs(outputs: Any, step: str) -> None:
        """Raise a TypeError naming ``step`` unless its ``outputs`` are a dict."""
        if not isinstance(outputs, dict):
            raise TypeError(f"{step} must return a dict of tensors, got {type(outputs).__name__}")
