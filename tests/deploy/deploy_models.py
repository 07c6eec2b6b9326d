"""The fitted models the deploy tests export, and their exports, made once per test run.

One normalisation per model covers every path of the exported predictions. Each model is
fitted and validated by Lightning on the toy defect set, so its thresholds and normalisation
statistics are real ones. ``expected`` is ``predict_step`` on 3 fresh images (the exports are
traced with a batch of 2). The caches are plain functions rather than fixtures of a
``tests/deploy/conftest.py``, whose module name would shadow ``tests/conftest.py`` for the
tests that import from it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, NamedTuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from support.toy_defects import SIZE, SyntheticDefects

from anomaly_kernels.deploy import export_model
from anomaly_kernels.lightning import AnomalyModule
from anomaly_kernels.models import DFKDE, PaDiM, PatchCore

MODELS: Dict[str, Callable[[], AnomalyModule]] = {
    "patchcore": lambda: PatchCore(
        backbone="resnet18", layers=("layer1", "layer2"), pre_trained=False, input_size=(SIZE, SIZE),
        coreset_sampling_ratio=0.1, normalization="min_max",
    ),
    "padim": lambda: PaDiM(
        backbone="resnet18", layers=("layer1", "layer2"), pre_trained=False, n_features=40, input_size=(SIZE, SIZE),
        normalization="cdf",
    ),
    "dfkde": lambda: DFKDE(backbone="resnet18", layers=("layer2", "layer3"), pre_trained=False, n_pca_components=8),
}
# DFKDE takes images of any size: its export is told the size.
EXPORT_OPTIONS = {"patchcore": {}, "padim": {}, "dfkde": {"image_size": SIZE}}


class Fitted(NamedTuple):
    name: str
    module: AnomalyModule
    images: torch.Tensor  # (3, 3, SIZE, SIZE) fresh test images
    expected: Dict[str, torch.Tensor]  # predict_step on them


def _loader(labels, seed: int) -> DataLoader:
    return DataLoader(SyntheticDefects(labels, seed=seed), batch_size=8)


@functools.lru_cache(maxsize=None)
def fitted(name: str) -> Fitted:
    """The model ``name``, fitted and validated on first use, and its predictions on the test images."""
    torch.manual_seed(0)
    module = MODELS[name]()
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=_loader([0] * 16, seed=1), val_dataloaders=_loader([0, 1] * 6, seed=2))
    images = SyntheticDefects([0, 1, 1], seed=3).images
    with torch.no_grad():
        expected = module.predict_step({"image": images.clone()}, 0)
    return Fitted(name, module, images, expected)


_EXPORTS = Path(tempfile.mkdtemp(prefix="anomaly-kernels-deploy-tests-"))
atexit.register(shutil.rmtree, _EXPORTS, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def exported(name: str, fmt: str) -> Path:
    """The model file of the ``fmt`` export of ``fitted(name)`` (exported on first use)."""
    return export_model(fitted(name).module, format=fmt, output_dir=_EXPORTS / f"{name}-{fmt}", **EXPORT_OPTIONS[name])
