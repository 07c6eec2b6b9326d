"""``anomaly-kernels fit``: train, validate and test a model, save it, write heat maps."""

from __future__ import annotations

import datetime
import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import timm
from pytorch_lightning.strategies import DDPStrategy

from anomaly_kernels.data import MVTecDataModule, generate_synthetic_dataset
from anomaly_kernels.data.datamodule import VAL_SPLIT_MODES
from anomaly_kernels.data.folder import scan_mvtec_category
from anomaly_kernels.data.synthetic import read_synthetic_settings, synthetic_settings
from anomaly_kernels.data.textures import TEXTURE_FAMILIES
from anomaly_kernels.pipeline.backbone_weights import (
    PRETRAINED_MODES, load_backbone_weights, read_weights_file, resolve_pretrained,
)
from anomaly_kernels.pipeline.checkpoint import CHECKPOINT_KEY, save_checkpoint
from anomaly_kernels.pipeline.heatmaps import prediction_rows, prediction_thresholds, write_panels, write_scores_csv
from anomaly_kernels.pipeline.inputs import about, check_output_folder
from anomaly_kernels.pipeline.models import model_class
from anomaly_kernels.pipeline.outputs import check_previous_outputs, overlay_name, remove_previous_outputs
from anomaly_kernels.pipeline.quiet import ONE_CLASS_REMARKS, StderrProgressBar, progress_callbacks, quiet_lightning
from anomaly_kernels.pipeline.stage_timer import StageTimer

__all__ = ["CHECKPOINT_KEY", "FitResult", "fit_and_test", "make_trainer", "save_checkpoint"]

SYNTHETIC_CATEGORY = "carpet_like"
# Sides of the square input images a run accepts: below 32 the backbones' deepest feature maps
# vanish; above 1024 the memory of the fitted statistics grows past what one machine holds.
IMAGE_SIZE_RANGE = (32, 1024)
# What a fit writes into its output folder (the synthetic set is handled on its own).
FIT_FILES = ("model.ckpt", "scores.csv")
FIT_FOLDERS = ("heatmaps", "masks")
DDP_STRATEGIES = ("ddp_spawn",)
# torch's own default for a process group: a rank waits this long for a frozen peer.
DEFAULT_DDP_TIMEOUT_S = 1800.0
# The metrics, per level, that need both normal and anomalous test images to be defined.
METRIC_LEVELS = ("image_", "pixel_")


@dataclass
class FitResult:
    """What a fit produced: test metrics, stage times (s), image counts and the files written.

    A metric is ``None`` where it is undefined: the test set lacks normal or anomalous images.
    """

    metrics: Dict[str, Optional[float]]
    stages: Dict[str, float]
    images: Dict[str, int]
    checkpoint: Path
    heatmaps: Optional[Path]
    scores_csv: Path
    weights_note: str
    data_note: str
    extra: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def make_trainer(
    accelerator: str,
    progress: Optional[bool],
    callbacks: List[pl.Callback],
    devices: int = 1,
    strategy: str = DDP_STRATEGIES[0],
    ddp_timeout: float = DEFAULT_DDP_TIMEOUT_S,
    quiet: Sequence[str] = (),
) -> pl.Trainer:
    """A one-epoch Trainer for the one-pass models (no logger, no automatic checkpoints).

    Args:
        accelerator: "cpu" or "gpu".
        progress: show progress bars (on stderr); ``None``: only when stderr is a terminal.
        callbacks: the run's own callbacks (the quiet filters and bars are added).
        devices: processes (CPU) or GPUs; above 1 the fit runs under ``strategy``.
        strategy: "ddp_spawn": the processes are started from this one.
        ddp_timeout: seconds a process waits in a collective for the others before failing.
        quiet: patterns of further warnings to filter (see :func:`progress_callbacks`).
    """
    extra = progress_callbacks(progress, quiet)
    options: Dict[str, Any] = {"devices": 1}
    if devices > 1:
        options = {
            "devices": devices,
            # Each rank reads its own contiguous block (MVTecDataModule); Lightning's sampler
            # would repeat images to even out the ranks.
            "use_distributed_sampler": False,
            "strategy": DDPStrategy(
                start_method="spawn", timeout=datetime.timedelta(seconds=ddp_timeout),
                process_group_backend="gloo" if accelerator == "cpu" else None,
            ),
        }
    return pl.Trainer(
        max_epochs=1, accelerator=accelerator, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
        enable_progress_bar=any(isinstance(c, StderrProgressBar) for c in extra), enable_model_summary=False,
        callbacks=list(callbacks) + extra, **options,
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
    try:
        return build_model(model, (image_size, image_size), pre_trained, backbone, **model_options)
    except (ValueError, TypeError) as error:
        # The models name the argument a message is about first: tag it, so the flag is named.
        mentioned = [name for name in model_options if str(error).startswith(name)]
        error.parameter = mentioned[0] if mentioned else "backbone"
        raise


def _check_model_options(model: str, cls: type, backbone: str, options: Dict[str, Any]) -> None:
    """Every option is one the model takes; PaDiM's feature count is known for the backbone."""
    parameters = inspect.signature(cls.__init__).parameters
    for name in options:
        if name not in parameters or name in ("backbone", "pre_trained", "input_size"):
            takers = [other for other in ("patchcore", "padim", "dfkde")
                      if name in inspect.signature(model_class(other).__init__).parameters]
            with about(name):
                raise ValueError(f"{name} is an option of {', '.join(takers) or 'no model'}, not of {model}")
    if model == "padim" and options.get("n_features") is None:
        from anomaly_kernels.models.padim import DEFAULT_N_FEATURES

        if backbone not in DEFAULT_N_FEATURES:
            with about("n_features"):
                raise ValueError(
                    f"PaDiM keeps a default number of features only for {sorted(DEFAULT_N_FEATURES)}, not for "
                    f"{backbone}: give n_features (--n-features), at most the channels of its layers"
                )


def _check_run_options(devices: int, strategy: str, ddp_timeout: float, val_split: str, val_split_ratio: float) -> None:
    with about("devices"):
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise ValueError(f"devices must be a positive int, got {devices!r}")
    with about("strategy"):
        if strategy not in DDP_STRATEGIES:
            raise ValueError(f"strategy must be one of {DDP_STRATEGIES}, got {strategy!r}")
    with about("ddp_timeout"):
        if isinstance(ddp_timeout, bool) or not isinstance(ddp_timeout, (int, float)) or not ddp_timeout > 0:
            raise ValueError(f"the process-group timeout must be a positive number of seconds, got {ddp_timeout!r}")
    with about("val_split"):
        if val_split not in VAL_SPLIT_MODES:
            raise ValueError(f"validation split must be one of {VAL_SPLIT_MODES}, got {val_split!r}")
    with about("val_split_ratio"):
        if isinstance(val_split_ratio, bool) or not isinstance(val_split_ratio, (int, float)) \
                or not 0 < val_split_ratio < 1:
            raise ValueError(f"validation ratio must be a number in (0, 1), got {val_split_ratio!r}")


def _describe_settings(settings: Dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items())


def _synthetic_set(root: Path, category: str, image_size: int, seed: int) -> str:
    """Generate (or reuse) the synthetic set of ``category``; returns a sentence saying which.

    A set made with other settings (seed, image size, counts) is regenerated, never reused.
    """
    wanted = synthetic_settings(category, image_size=image_size, seed=seed)
    folder = root / category
    if not folder.exists():
        with about("seed"):
            generate_synthetic_dataset(root, categories=(category,), image_size=image_size, seed=seed)
        return f"data: synthetic '{category}' set generated in {root}"
    found = read_synthetic_settings(folder)
    if found == wanted:
        return f"data: synthetic '{category}' set reused from {root} (same seed and image size)"
    if found is None:
        why = "it records no settings"
    else:
        changed = {key: value for key, value in wanted.items() if found.get(key) != value}
        was = {key: found.get(key) for key in changed}
        why = f"it was made with {_describe_settings(was)}; this run asks for {_describe_settings(changed)}"
    with about("seed"):
        generate_synthetic_dataset(root, categories=(category,), image_size=image_size, seed=seed, overwrite=True)
    return f"data: synthetic '{category}' set regenerated in {root} ({why})"


def _labels(dataset: Any) -> List[int]:
    """Image labels of a test set (an MVTecFolder or a Subset of one)."""
    if hasattr(dataset, "labels"):
        return list(dataset.labels)
    return [dataset.dataset.labels[index] for index in dataset.indices]


def _one_class_note(labels: List[int]) -> Optional[str]:
    """A warning when the test labels are all of one kind (the metrics are then undefined), else None."""
    if 0 in labels and 1 in labels:
        return None
    missing = "anomalous" if 1 not in labels else "normal"
    return (
        f"warning: the test set has no {missing} image: AUROC and F1 need both kinds, so the test metrics "
        "are undefined (n/a)"
    )


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
    progress: Optional[bool] = None,
    model_options: Optional[Dict[str, Any]] = None,
    val_split: str = "same_as_test",
    val_split_ratio: float = 0.5,
    devices: int = 1,
    strategy: str = "ddp_spawn",
    ddp_timeout: float = DEFAULT_DDP_TIMEOUT_S,
    overwrite: bool = False,
) -> FitResult:
    """Fit ``model`` on a folder in MVTec layout (or a generated synthetic set) and test it.

    Args:
        model: "patchcore", "padim" or "dfkde".
        output_dir: receives ``model.ckpt``, ``scores.csv``, per test image a review panel
            ``heatmaps/<defect>/<image>.png`` and its predicted mask ``masks/<defect>/<image>.png``
            (models with anomaly maps; see :func:`write_panels`), and ``synthetic/`` when no
            data folder is given.
        data_root: MVTec-layout root; ``None`` generates the synthetic set, or reuses the one in
            ``<output_dir>/synthetic`` when it was made with the same settings (else regenerates it).
        category: category folder under ``data_root`` (synthetic: "carpet_like").
        image_size: side of the square input images.
        backbone: timm backbone name (default: the model's own).
        pretrained: "auto", "download" or "none" (see :func:`resolve_pretrained`).
        weights: local backbone weights file (overrides ``pretrained``).
        accelerator: "cpu" or "gpu".
        batch_size: images per batch.
        seed: seed of the synthetic data, the validation split and the sampling.
        progress: progress bars on stderr; ``None``: only when stderr is a terminal.
        model_options: keyword arguments of the model class: ``layers``, ``n_features`` (PaDiM),
            ``coreset_sampling_ratio`` and ``num_neighbors`` (PatchCore), ``n_pca_components``
            (DFKDE), ...
        val_split: "same_as_test" or "from_test" (see :class:`MVTecDataModule`).
        val_split_ratio: share of the test images used for validation with "from_test".
        devices: processes (CPU) or GPUs the fit runs on; above 1, under ``strategy``.
        strategy: "ddp_spawn".
        ddp_timeout: seconds a process waits for the others in a collective before failing.
        overwrite: replace the outputs of an earlier run in ``output_dir``; without it they are
            refused (nothing of an earlier run is left beside the new checkpoint).

    Returns:
        A :class:`FitResult`; its ``notes`` say what the caller should know (undefined metrics,
        replaced outputs).
    """
    # Every argument, file and folder is checked, and the model built, before any data is
    # generated or read: a bad input fails in seconds.
    with about("model"):
        cls = model_class(model)
    with about("image_size"):
        image_size = _check_image_size(image_size)
    with about("output_dir"):
        output_dir = check_output_folder(output_dir, files=FIT_FILES, folders=FIT_FOLDERS + ("synthetic",))
        replaced = check_previous_outputs(output_dir, FIT_FILES, FIT_FOLDERS, overwrite)
    default_backbone = inspect.signature(cls.__init__).parameters["backbone"].default
    if backbone is not None and not timm.is_model(backbone):
        with about("backbone"):
            raise ValueError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
    model_options = dict(model_options or {})
    _check_model_options(model, cls, backbone or default_backbone, model_options)
    _check_run_options(devices, strategy, ddp_timeout, val_split, val_split_ratio)
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
    module = _build(model, image_size, pre_trained, pretrained, backbone, model_options)
    if state is not None:
        with about("weights"):
            load_backbone_weights(module.model.feature_extractor.feature_extractor, state)

    notes: List[str] = []
    if replaced:
        remove_previous_outputs(output_dir, replaced)
        notes.append(f"note: removed the earlier run's {', '.join(replaced)} from {output_dir}")
    if data_root is None:
        data_root = output_dir / "synthetic"
        category = category or SYNTHETIC_CATEGORY
        data_note = _synthetic_set(Path(data_root), category, image_size, seed)
    else:
        data_note = f"data: {Path(data_root) / category}"
    datamodule = MVTecDataModule(
        data_root, category, image_size=image_size, train_batch_size=batch_size, eval_batch_size=batch_size,
        seed=seed, val_split=val_split, val_split_ratio=val_split_ratio,
    )

    # A test set of one kind of image leaves the metrics undefined: said once, in the notes.
    metrics_note = _one_class_note(_labels(datamodule.test_data))
    quiet = ONE_CLASS_REMARKS if metrics_note else ()
    with quiet_lightning(quiet):
        started = time.perf_counter()
        timer = StageTimer()
        if devices == 1:
            timer.wrap_fit(module)
            trainer = make_trainer(accelerator, progress, [timer], quiet=quiet)
            trainer.fit(module, datamodule=datamodule)
        else:
            # The processes are started here, fit together and hand rank 0's fitted module back;
            # testing and the outputs then run in this process on one device.
            make_trainer(accelerator, progress, [], devices, strategy, ddp_timeout, quiet).fit(module, datamodule=datamodule)
            trainer = make_trainer(accelerator, progress, [timer], quiet=quiet)
            timer.stages = {f"training ({devices} processes)": time.perf_counter() - started, "scoring": 0.0}
        tested = trainer.test(module, datamodule=datamodule, verbose=False)
        checkpoint = save_checkpoint(
            trainer, output_dir / "model.ckpt", {"model": model, "image_size": image_size, "category": category}
        )
        outputs = trainer.predict(module, dataloaders=datamodule.test_dataloader())
    metrics: Dict[str, Optional[float]] = {name: float(value) for name, value in (tested[0] if tested else {}).items()}
    if metrics_note:
        metrics.update({name: None for name in metrics if name.startswith(METRIC_LEVELS)})
        notes.append(metrics_note)
    scores_csv = write_scores_csv(prediction_rows(outputs), output_dir / "scores.csv")
    heatmaps = None
    if outputs and outputs[0].get("anomaly_maps") is not None:
        heatmaps = output_dir / "heatmaps"
        test_folder = Path(data_root) / category / "test"
        for batch in outputs:
            names = [overlay_name(path, test_folder) for path in batch["image_path"]]
            write_panels(batch, heatmaps, output_dir / "masks", prediction_thresholds(module), names)
    return FitResult(
        metrics=metrics, stages=dict(timer.stages), images=dict(timer.images), checkpoint=checkpoint,
        heatmaps=heatmaps, scores_csv=scores_csv, weights_note=weights_note, data_note=data_note,
        extra={"total_s": time.perf_counter() - started}, notes=notes,
    )
