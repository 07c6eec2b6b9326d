"""``anomaly-kernels fit``: train, validate and test a model, save it, write heat maps."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch

from anomaly_kernels.data import MVTecDataModule, generate_synthetic_dataset
from anomaly_kernels.pipeline.backbone_weights import load_backbone_weights, resolve_pretrained
from anomaly_kernels.pipeline.heatmaps import prediction_rows, write_overlays, write_scores_csv
from anomaly_kernels.pipeline.models import model_class
from anomaly_kernels.pipeline.stage_timer import StageTimer

CHECKPOINT_KEY = "anomaly_kernels"
SYNTHETIC_CATEGORY = "carpet_like"


@dataclass
class FitResult:
    """What a fit produced: test metrics, stage times (s), image counts and the files written."""

    metrics: Dict[str, float]
    stages: Dict[str, float]
    images: Dict[str, int]
    checkpoint: Path
    heatmaps: Optional[Path]
    scores_csv: Path
    weights_note: str
    data_note: str
    extra: Dict[str, Any] = field(default_factory=dict)


def make_trainer(accelerator: str, progress: bool, callbacks: List[pl.Callback]) -> pl.Trainer:
    """A one-epoch Trainer for the one-pass models (no logger, no automatic checkpoints)."""
    return pl.Trainer(
        max_epochs=1, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        num_sanity_val_steps=0, enable_progress_bar=progress, enable_model_summary=False, callbacks=callbacks,
    )


def build_model(name: str, image_size: tuple, pre_trained: bool, backbone: Optional[str], **options: Any):
    """The model ``name`` for images of ``image_size``, min-max normalised scores."""
    cls = model_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    kwargs = dict(pre_trained=pre_trained, normalization="min_max", **options)
    if "input_size" in parameters:
        kwargs["input_size"] = image_size
    if backbone is not None:
        kwargs["backbone"] = backbone
    return cls(**kwargs)


def save_checkpoint(trainer: pl.Trainer, path: Path, metadata: Dict[str, Any]) -> Path:
    """Save the fitted module with what ``predict`` needs to rebuild it (model name, image size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path, weights_only=True)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint[CHECKPOINT_KEY] = metadata
    torch.save(checkpoint, path)
    return path


def fit_and_test(
    model: str = "patchcore",
    output_dir: str | Path = "anomaly_kernels_run",
    data_root: Optional[str | Path] = None,
    category: Optional[str] = None,
    image_size: int = 128,
    backbone: Optional[str] = None,
    pretrained: str = "auto",
    weights: Optional[str] = None,
    accelerator: str = "cpu",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    model_options: Optional[Dict[str, Any]] = None,
) -> FitResult:
    """Fit ``model`` on a folder in MVTec layout (or a generated synthetic set) and test it.

    Args:
        model: "patchcore", "padim" or "dfkde".
        output_dir: receives ``model.ckpt``, ``scores.csv``, ``heatmaps/`` (and ``synthetic/``
            when no data folder is given).
        data_root: MVTec-layout root; ``None`` generates the synthetic set.
        category: category folder under ``data_root`` (synthetic: "carpet_like").
        image_size: side of the square input images.
        backbone: timm backbone name (default: the model's own).
        pretrained: "auto", "download" or "none" (see :func:`resolve_pretrained`).
        weights: local backbone weights file (overrides ``pretrained``).
        accelerator: "cpu" or "gpu".
        model_options: extra keyword arguments of the model class.
    """
    pl.seed_everything(seed, verbose=False)
    output_dir = Path(output_dir)
    cls = model_class(model)
    default_backbone = inspect.signature(cls.__init__).parameters["backbone"].default
    pre_trained, weights_note = resolve_pretrained(backbone or default_backbone, pretrained, weights)
    if model == "dfkde" and not pre_trained and weights is None:
        weights_note += (
            "\nnote: DFKDE scores whole images from pooled deep features; with random weights expect "
            "results near chance"
        )

    if data_root is None:
        data_root = output_dir / "synthetic"
        category = category or SYNTHETIC_CATEGORY
        if not (Path(data_root) / category).is_dir():
            generate_synthetic_dataset(data_root, categories=(category,), image_size=image_size, seed=seed)
        data_note = f"data: synthetic '{category}' set generated in {data_root}"
    else:
        if category is None:
            raise ValueError("category is required with a data folder (the sub-folder of data_root to use)")
        data_note = f"data: {Path(data_root) / category}"
    datamodule = MVTecDataModule(
        data_root, category, image_size=image_size, train_batch_size=batch_size, eval_batch_size=batch_size, seed=seed
    )

    module = build_model(model, (image_size, image_size), pre_trained, backbone, **(model_options or {}))
    if weights is not None:
        load_backbone_weights(module.model.feature_extractor.feature_extractor, weights)
    timer = StageTimer()
    timer.wrap_fit(module)
    trainer = make_trainer(accelerator, progress, [timer])
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    tested = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {name: float(value) for name, value in (tested[0] if tested else {}).items()}

    checkpoint = save_checkpoint(
        trainer, output_dir / "model.ckpt", {"model": model, "image_size": image_size, "category": category}
    )
    outputs = trainer.predict(module, dataloaders=datamodule.test_dataloader())
    scores_csv = write_scores_csv(prediction_rows(outputs), output_dir / "scores.csv")
    heatmaps = None
    if outputs and outputs[0].get("anomaly_maps") is not None:
        heatmaps = output_dir / "heatmaps"
        for batch in outputs:
            names = [f"{Path(p).parent.name}_{Path(p).stem}" for p in batch["image_path"]]
            write_overlays(batch["image_path"], batch["anomaly_maps"], heatmaps, names)
    return FitResult(
        metrics=metrics, stages=dict(timer.stages), images=dict(timer.images), checkpoint=checkpoint,
        heatmaps=heatmaps, scores_csv=scores_csv, weights_note=weights_note, data_note=data_note,
        extra={"total_s": time.perf_counter() - started},
    )
