"""OnePassAnomalyModule: Lightning plumbing of models fitted from one pass over the training images."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from torchmetrics import Metric

from anomaly_kernels.distributed.row_gather import all_gather_rows
from anomaly_kernels.lightning.anomaly_module import AnomalyModule
from anomaly_kernels.lightning.ddp import (
    any_rank,
    cpu_capable_group,
    fit_without_gradient_wrapper,
    keep_reduced_metric_states,
    metrics_synchronised_over,
    refuse_skipped_hooks,
    trainer_process_group,
)


class OnePassAnomalyModule(AnomalyModule):
    """An :class:`AnomalyModule` whose model is fitted from the training features, without gradients.

    PatchCore, PaDiM and DFKDE learn nothing by gradient descent: they describe the training
    images with a frozen CNN and fit a memory bank, Gaussians or a density to those features.
    Under Lightning this is a training epoch that only collects features:

    - ``automatic_optimization`` is ``False`` and :meth:`configure_optimizers` returns ``None``:
      Lightning then runs the training loop without an optimiser, backward pass or loss, and
      ``training_step`` returns ``None``. (Lightning reports once per fit that it runs with no
      optimizer, and that modules are in eval mode at the start of training: the frozen
      backbone is; both are the intended setup.)
    - ``training_step`` appends ``self.model.embed(batch["image"])`` (batch-first tensors, kept
      on the model's device) to the epoch's collection; the collection is cleared at the start
      of every training epoch, so each epoch fits afresh and one epoch (``max_epochs=1``) is all
      these models need.
    - The fit (:meth:`fit_collected_features`, one ``torch.cat`` of the collection, then the
      model-specific :meth:`_fit_model`) runs in ``on_validation_start``, because Lightning 2
      runs the end-of-epoch validation before ``on_train_epoch_end``, and in
      ``on_train_epoch_end`` for fits without validation data. It runs only when new features
      were collected since the last fit, and never in inference mode, so the fitted buffers are
      ordinary tensors that later ``load_state_dict`` calls can overwrite. The collection is
      released at the end of the training epoch.
    - ``validation_step`` (also used by ``test_step`` and ``predict_step``) returns a new dict:
      the batch entries plus the model's ``anomaly_maps`` (B, 1, H, W) and/or ``pred_scores``
      (B,); the caller's batch dict is not modified. Scoring before the model is fitted raises
      a RuntimeError, except in Lightning's sanity check before training, whose steps are
      skipped (nothing is fitted yet, so there is nothing to check).

    The collected features are held in memory until the fit (model-specific sizes are in each
    subclass's documentation).

    Several processes (``Trainer(strategy="ddp" | "ddp_spawn", devices=n)``, gloo on CPUs,
    NCCL on GPUs; the fit runs in the default process group on the model's device):

    - Fitting does not wrap the module in ``DistributedDataParallel`` (there are no gradients
      to reduce, and torch refuses the wrapper for a module without trainable parameters):
      :meth:`setup` tells the strategy to broadcast rank 0's parameters and buffers instead
      (see :mod:`anomaly_kernels.lightning.ddp`).
    - Each rank collects the features of its own training batches. The fit is collective: the
      ranks first agree whether any of them collected new features, then every rank calls
      :meth:`_fit_model_distributed` with its own features (``None`` for a rank without any),
      which must leave the same fitted model on every rank, equal to a one-process fit on all
      ranks' features in rank order. PaDiM reduces summed moments, PatchCore runs the sharded
      coreset; the default here gathers every rank's features to every rank and fits there
      (right for small features such as DFKDE's pooled vectors).
    - Validation, test and predict run per rank on its own batches with the whole fitted
      model; thresholds and metrics are torchmetrics states that synchronise over the ranks
      when computed, so every rank gets the thresholds and metrics of all ranks' outputs. The
      min-max / CDF normalisation statistics, which are read as states rather than computed,
      are reduced over the ranks at the end of every validation epoch
      (:meth:`on_validation_epoch_end`).
    - The validation and test epoch ends are collective whatever each rank's number of
      batches: every rank enters the same collectives in the same order, a rank without
      outputs contributing empty states (no scores, +inf / -inf extremes, zero sums), so the
      thresholds, metrics and statistics are those of one process on all ranks' outputs. A
      rank gets no batch when its loader has no length (an ``IterableDataset`` split by rank);
      Lightning refuses a sized loader that is empty on one rank, and :meth:`setup` refuses
      ``allow_zero_length_dataloader_with_multiple_devices``, with which Lightning would skip
      that rank's hooks and the collectives would no longer pair up.
    - The epoch-end states are CPU tensors. When the default group has no CPU backend (NCCL
      alone, Lightning's default on GPUs), :meth:`setup` makes a gloo group of the same ranks
      once, and every epoch-end synchronisation of thresholds, metrics and statistics runs
      over it; the fit's collectives stay on the default group and the model's device. A
      group made for the purpose, rather than an error asking for
      ``DDPStrategy(process_group_backend="cpu:gloo,cuda:nccl")``, keeps the default setup
      working: the synchronised states are a few scalars, image scores and fixed-size pixel
      histograms, so gloo's speed does not matter, and nothing else moves through it.
    - Lightning's default ``DistributedSampler`` pads each split to equal length with repeated
      samples: a training set whose length is not a multiple of the world size has images
      counted twice in the fit, a validation set has outputs counted twice in thresholds and
      metrics. :class:`~anomaly_kernels.distributed.ContiguousDistributedSampler` with
      ``Trainer(use_distributed_sampler=False)`` splits without repeats, in data-set order.
    - Rank 0's checkpoint holds the full fitted state and loads on a single device.

    Subclasses set ``self.model`` to a module with ``embed(images) -> Tensor`` (batch-first),
    ``is_fitted`` and a forward pass, and implement :meth:`_fit_model` and :meth:`_score`.

    Args:
        **anomaly_module_options: passed to :class:`AnomalyModule` (metrics, threshold,
            normalization, ...).
    """

    def __init__(self, **anomaly_module_options: Any) -> None:
        super().__init__(**anomaly_module_options)
        # No gradient steps: Lightning must not look for a loss or call backward.
        self.automatic_optimization = False
        self._training_features: List[torch.Tensor] = []
        self._fitted_batches = 0

    def configure_optimizers(self) -> None:
        """No optimiser: the model is fitted from collected features, not trained by gradients.

        Returns:
            ``None``.
        """
        return None

    def training_step(self, batch: Dict[str, Any], batch_idx: int, *args: Any, **kwargs: Any) -> None:
        """Collect the features of the batch's images for the end-of-epoch fit.

        Args:
            batch: dict with ``image`` (B, 3, H, W).
            batch_idx: index of the batch.

        Returns:
            ``None``: there is no loss.
        """
        self._training_features.append(self.model.embed(batch_images(batch)))
        self._count_training_step()
        return None

    def _count_training_step(self) -> None:
        # Lightning's global_step counts optimiser steps, and a one-pass fit makes none: with
        # global_step stuck at 0, ModelCheckpoint takes every epoch for already saved and writes
        # nothing. One counted step per collected batch makes global_step (and max_steps,
        # every_n_train_steps) count training batches, as for a gradient-trained model.
        if self._trainer is None:
            return
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def setup(self, stage: str) -> None:
        """Prepare a multi-process run: no gradient wrapper, no skipped hooks, a group for CPU states.

        Before a fit the strategy is kept from wrapping the module for gradients. Under several
        processes the CPU-capable group of the epoch-end synchronisation is made here, where
        every rank runs the hook at the same point (making it is collective when the default
        group has no CPU backend).

        Raises:
            ValueError: under several processes,
                ``allow_zero_length_dataloader_with_multiple_devices`` is set on the module or
                its data module.
        """
        super().setup(stage)
        if self._trainer is None:
            return
        if stage == "fit":
            fit_without_gradient_wrapper(self._trainer.strategy, self)
        group = trainer_process_group(self._trainer)
        if group is not None:
            refuse_skipped_hooks(self._trainer, self)
            cpu_capable_group(group)

    def on_train_epoch_start(self) -> None:
        """Start a fresh collection of training features."""
        self._training_features = []
        self._fitted_batches = 0

    def on_validation_start(self) -> None:
        """Fit the model on the features collected so far in this training epoch (if any are new)."""
        self.fit_collected_features()

    def on_train_epoch_end(self) -> None:
        """Fit on the epoch's features if no validation did, then release them."""
        self.fit_collected_features()
        self._training_features = []
        self._fitted_batches = 0

    def fit_collected_features(self) -> None:
        """Fit the model on every feature collected in the current training epoch.

        Does nothing when no batch was collected since the last fit. Under a multi-process
        trainer every rank must call it (Lightning's hooks do): the fit is collective, and it
        runs on every rank as soon as one rank has new features.
        """
        group = trainer_process_group(self._trainer)
        has_new_features = len(self._training_features) > self._fitted_batches
        if group is not None:
            has_new_features = any_rank(has_new_features, group, self.device)
        if not has_new_features:
            return
        # Lightning's evaluation loops run in inference mode; should this be called inside one,
        # tensors created there could never be updated in place again (e.g. by
        # load_state_dict), so the fit always runs in normal mode.
        with torch.inference_mode(False), torch.no_grad():
            features = torch.cat(self._training_features, dim=0) if self._training_features else None
            # Keep one tensor instead of the per-batch pieces: the pieces' memory is freed.
            self._training_features = [] if features is None else [features]
            self._fitted_batches = len(self._training_features)
            if group is None:
                self._fit_model(features)
            else:
                self._fit_model_distributed(features, group)

    @abstractmethod
    def _fit_model(self, features: torch.Tensor) -> None:
        """Fit ``self.model`` to the concatenated training features (batch-first)."""

    def _fit_model_distributed(self, features: Optional[torch.Tensor], group: dist.ProcessGroup) -> None:
        """Fit ``self.model`` on every rank to the features of all ranks of ``group``.

        Called on every rank with its own features (``None`` when it collected none); must
        leave the same fitted model on every rank, equal to :meth:`_fit_model` on all ranks'
        features concatenated in rank order. This default gathers all features to every rank
        (memory: the whole training set's features on each) and fits there; models with large
        features override it with a reduction that moves less.
        """
        self._fit_model(all_gather_rows(features, group, device=self.device))

    def on_validation_epoch_end(self) -> None:
        """Thresholds, metrics and normalisation statistics of the epoch's outputs on all ranks.

        One process: as :class:`AnomalyModule`. Several processes: the collective version of
        the same steps (:meth:`_epoch_end_over_ranks`), which also reduces the min-max and CDF
        statistics over the ranks (they are states read directly when normalising, so they are
        replaced by their reduction: min/max, sums), which rank 0's checkpoint then holds. The
        sanity check before training computes nothing, on every rank alike.
        """
        group = trainer_process_group(self._trainer)
        sanity_checking = self._trainer is not None and self._trainer.sanity_checking
        if group is None or sanity_checking:
            super().on_validation_epoch_end()
            return
        self._epoch_end_over_ranks(self.validation_step_outputs, group, validation=True)

    def on_test_epoch_end(self) -> None:
        """Metrics of the test outputs on all ranks (collective under several processes), then logged."""
        group = trainer_process_group(self._trainer)
        if group is None:
            super().on_test_epoch_end()
            return
        self._epoch_end_over_ranks(self.test_step_outputs, group, validation=False)

    def _epoch_end_over_ranks(self, outputs: List[Dict[str, Any]], group: dist.ProcessGroup, validation: bool) -> None:
        """The epoch end of :class:`AnomalyModule` with collectives that every rank enters alike.

        The one-process epoch end skips work by local tests (no outputs, no pixel data, a metric
        never updated); with several processes those tests differ between ranks, and a rank
        that skips a synchronisation leaves the others waiting. Here the ranks first agree
        whether any of them has outputs and whether any has pixel outputs (maps and masks);
        then every rank resets, fills (with its own outputs, possibly none) and computes the
        same metrics in the same order, over the CPU-capable group made in :meth:`setup`.

        Args:
            outputs: this rank's step outputs of the epoch (possibly empty).
            group: the trainer's process group.
            validation: validation (statistics, thresholds, raw-score metrics) or test
                (metrics at the validation thresholds, on normalised scores when normalising).
        """
        cpu_group = cpu_capable_group(group)
        cpu = torch.device("cpu")
        if not any_rank(bool(outputs), cpu_group, cpu):
            return  # no rank has an output: nothing changes, as for one process without outputs
        pixel_outputs = any_rank(_has_pixel_outputs(outputs), cpu_group, cpu)
        with metrics_synchronised_over(self._epoch_end_metrics(), cpu_group), _quiet_empty_rank(not outputs):
            if validation:
                for statistics in (self.min_max, self.score_distribution):
                    # The statistics live on the model's device; their reduction runs on the CPU group.
                    device = statistics.device
                    keep_reduced_metric_states(statistics.cpu(), cpu_group)
                    statistics.to(device)
                if self.adaptive_threshold:
                    self._compute_adaptive_threshold(outputs, pixel_data=pixel_outputs)
                self._compute_metrics(outputs)
            else:
                self._compute_metrics(outputs, normalized=self.normalization is not None)
            self._log_metrics(pixel_data=pixel_outputs)

    def _epoch_end_metrics(self) -> List[Metric]:
        """Every metric the epoch end synchronises: thresholds, statistics and both collections."""
        return [
            self.image_threshold,
            self.pixel_threshold,
            self.min_max,
            self.score_distribution,
            *self.image_metrics.values(),
            *self.pixel_metrics.values(),
        ]

    @abstractmethod
    def _score(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Score images (B, 3, H, W): a dict with ``anomaly_maps`` and/or ``pred_scores``."""

    def validation_step(
        self, batch: Dict[str, Any], batch_idx: int, *args: Any, **kwargs: Any
    ) -> Optional[Dict[str, Any]]:
        """Score the batch's images.

        Args:
            batch: dict with ``image`` (B, 3, H, W) and, for metrics, ``label`` (B,) and
                optionally ``mask``.
            batch_idx: index of the batch.

        Returns:
            A new dict: the batch entries plus the model's ``anomaly_maps`` and/or
            ``pred_scores``; ``None`` for the sanity-check steps of an unfitted model.

        Raises:
            RuntimeError: the model is not fitted (no training epoch and no checkpoint).
        """
        images = batch_images(batch)
        if not self.model.is_fitted:
            if self._trainer is not None and self._trainer.sanity_checking:
                return None
            raise RuntimeError(
                f"{type(self).__name__} is not fitted: run Trainer.fit on normal training images "
                "or load a fitted checkpoint before validating, testing or predicting"
            )
        return {**batch, **self._score(images)}

    def on_validation_batch_end(
        self, outputs: Optional[Dict[str, Any]], batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Gather the step output, except for sanity-check steps skipped by an unfitted model."""
        if outputs is None:
            return
        super().on_validation_batch_end(outputs, batch, batch_idx, dataloader_idx)


def _has_pixel_outputs(outputs: List[Dict[str, Any]]) -> bool:
    """Whether any output feeds the pixel threshold and metrics (it has maps and masks)."""
    return any("mask" in output and "anomaly_maps" in output for output in outputs)


@contextmanager
def _quiet_empty_rank(empty: bool) -> Iterator[None]:
    """On a rank without outputs, silence torchmetrics' warning that ``compute`` precedes ``update``.

    Such a rank computes the synchronised states of the others: nothing is wrong there.
    """
    with warnings.catch_warnings():
        if empty:
            warnings.filterwarnings(
                "ignore", message=r"The ``compute`` method of metric \w+ was called before the ``update`` method"
            )
        yield


def batch_images(batch: Any) -> torch.Tensor:
    """The ``image`` entry of a batch dict, or a TypeError/ValueError saying what the batch lacks."""
    if not isinstance(batch, dict):
        raise TypeError(f"batch must be a dict with an 'image' entry (B, 3, H, W), got {type(batch).__name__}")
    if "image" not in batch:
        raise ValueError(f"batch must have an 'image' entry (B, 3, H, W), got keys {sorted(batch)}")
    return batch["image"]
