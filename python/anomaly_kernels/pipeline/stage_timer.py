"""Wall time of the stages of a fit: feature extraction, coreset / statistics fit, scoring."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import pytorch_lightning as pl
import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StageTimer(pl.Callback):
    """Lightning callback adding up the time of training batches and test batches.

    ``stages`` maps a stage name to seconds: "feature extraction" (training batches: the
    backbone's forward pass over the training set), "fit" (added by :meth:`wrap_fit`) and
    "scoring" (test batches: features, distances / densities, maps and scores).
    """

    def __init__(self) -> None:
        self.stages: "OrderedDict[str, float]" = OrderedDict(
            [("feature extraction", 0.0), ("fit", 0.0), ("scoring", 0.0)]
        )
        self.images = {"train": 0, "test": 0}
        self._started = 0.0

    def _start(self) -> None:
        _sync()
        self._started = time.perf_counter()

    def _stop(self, stage: str) -> None:
        _sync()
        self.stages[stage] += time.perf_counter() - self._started

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._stop("feature extraction")
        self.images["train"] += len(batch["image"])

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start()

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._stop("scoring")
        self.images["test"] += len(batch["image"])

    def wrap_fit(self, module: Any) -> None:
        """Time the module's ``fit_collected_features`` (coreset selection / Gaussian / KDE fit)."""
        fit = module.fit_collected_features

        def timed_fit(*args: Any, **kwargs: Any) -> Any:
            self._start()
            try:
                return fit(*args, **kwargs)
            finally:
                self._stop("fit")

        module.fit_collected_features = timed_fit
