"""``anomaly-kernels fit``: train, validate and test a model, save it, write heat maps."""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import timm

from anomaly_kernels.data import MVTecDataModule, generate_synthetic_dataset
from anomaly_kernels.data.folder import scan_mvtec_category
from anomaly_kernels.data.textures import TEXTURE_FAMILIES
from anomaly_kernels.pipeline.backbone_weights import (
    PRETRAINED_MODES, load_backbone_weights, read_weights_file, resolve_pretrained,
)
from anomaly_kernels.pipeline.heatmaps import prediction_rows, write_overlays, write_scores_csv
from anomaly_kernels.pipeline.inputs import about, check_output_folder
from anomaly_kernels.pipeline.models import model_class
from anomaly_kernels.pipeline.stage_timer import StageTimer

CHECKPOINT_KEY = "anomaly_kernels"
SYNTHETIC_CATEGORY = "carpet_like"
# Sides of the square input images a run accepts: below 32 the backbones' deepest feature maps
# vanish; above 1024 the memory of the fitted statistics grows past what one machine holds.
IMAGE_SIZE_RANGE = (32, 1024)


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
    """Save the fitted module with what ``predict`` needs to rebuild it (model name, image size).

    The checkpoint, metadata included, is written once to a temporary file beside ``path`` and
    renamed over it: an interrupted save leaves the previous file (or none), never a half one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    module = trainer.lightning_module
    hook = module.on_save_checkpoint

    def with_metadata(checkpoint: Dict[str, Any]) -> None:
        hook(checkpoint)
        checkpoint[CHECKPOINT_KEY] = dict(metadata)

    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    module.on_save_checkpoint = with_metadata
    try:
        trainer.save_checkpoint(partial, weights_only=True)
        os.replace(partial, path)
    finally:
        del module.on_save_checkpoint
        if partial.exists():
            partial.unlink()
    return path


def _check_image_size(image_size: int) -> int:
    low, high = IMAGE_SIZE_RANGE
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not low <= image_size <= high:
        raise ValueError(f"image size must be an int from {low} to {high}, got {image_size!r}")
    return image_size


def _check_data(data_root: Optional[str | Path], category: Optional[str]) -> None:
    """Fail now, not after the model is built, on a data folder without usable images."""
    if data_root is None:
        if category is not None and category not in TEXTURE_FAMILIES:
            with about("category"):
                raise ValueError(
                    f"the synthetic set has the categories {sorted(TEXTURE_FAMILIES)}, got {category!r} "
                    "(give a data folder to use other categories)"
                )
        return
    if category is None:
        with about("category"):
            raise ValueError("category is required with a data folder: name the sub-folder to use")
    with about("data_root"):
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"dataset root not found: {data_root} is not a directory")
    with about("category"):
        for split in ("train", "test"):
            scan_mvtec_category(data_root, category, split)


def _build(model: str, image_size: int, pre_trained: bool, pretrained: str, backbone: Optional[str],
           model_options: Dict[str, Any]):
    if pre_trained and pretrained == "download":
        # Offline, the hub's client logs one line per retry before giving up; the error says it all.
        hub_logger = logging.getLogger("huggingface_hub")
        level = hub_logger.level
        hub_logger.setLevel(logging.ERROR)
        try:
            with about("pretrained"):
                try:
                    return build_model(model, (image_size, image_size), pre_trained, backbone, **model_options)
                except Exception as error:
                    cause = error
                    while cause.__cause__ is not None or cause.__context__ is not None:
                        cause = cause.__cause__ or cause.__context__
                    name = backbone or inspect.signature(model_class(model).__init__).parameters["backbone"].default
                    raise RuntimeError(
                        f"could not get timm's pretrained weights of {name} ({type(cause).__name__}); "
                        "without network access, train with random weights or a local weights file"
                    ) from error
        finally:
            hub_logger.setLevel(level)
    with about("backbone"):
        return build_model(model, (image_size, image_size), pre_trained, backbone, **model_options)


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
    # Every argument, file and folder is checked, and the model built, before any data is
    # generated or read: a bad input fails in seconds.
    with about("model"):
        cls = model_class(model)
    with about("image_size"):
        image_size = _check_image_size(image_size)
    with about("output_dir"):
        output_dir = check_output_folder(
            output_dir, files=("model.ckpt", "scores.csv"), folders=("heatmaps", "synthetic")
        )
    default_backbone = inspect.signature(cls.__init__).parameters["backbone"].default
    if backbone is not None and not timm.is_model(backbone):
        with about("backbone"):
            raise ValueError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
    with about("pretrained"):
        if pretrained not in PRETRAINED_MODES:
            raise ValueError(f"pretrained must be one of {PRETRAINED_MODES}, got {pretrained!r}")
    with about("weights"):
        pre_trained, weights_note = resolve_pretrained(backbone or default_backbone, pretrained, weights)
    with about("batch_size"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive int, got {batch_size!r}")
    if data_root is None:
        with about("seed"):
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise ValueError(f"seed must be an int from 0 to 2**32 - 1 for generated data, got {seed!r}")
    state = None
    if weights is not None:
        with about("weights"):
            state = read_weights_file(weights)
    if model == "dfkde" and not pre_trained and weights is None:
        weights_note += (
            "\nnote: DFKDE scores whole images from pooled deep features; with random weights expect "
            "results near chance"
        )
    _check_data(data_root, category)

    pl.seed_everything(seed, verbose=False)
    module = _build(model, image_size, pre_trained, pretrained, backbone, model_options or {})
    if state is not None:
        with about("weights"):
            load_backbone_weights(module.model.feature_extractor.feature_extractor, state)

    if data_root is None:
        data_root = output_dir / "synthetic"
        category = category or SYNTHETIC_CATEGORY
        if (Path(data_root) / category).is_dir():
            data_note = f"data: synthetic '{category}' set reused from {data_root}"
        else:
            with about("seed"):
                generate_synthetic_dataset(data_root, categories=(category,), image_size=image_size, seed=seed)
            data_note = f"data: synthetic '{category}' set generated in {data_root}"
    else:
        data_note = f"data: {Path(data_root) / category}"
    datamodule = MVTecDataModule(
        data_root, category, image_size=image_size, train_batch_size=batch_size, eval_batch_size=batch_size, seed=seed
    )

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
