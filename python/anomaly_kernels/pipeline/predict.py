"""``anomaly-kernels predict``: anomaly maps and scores of a folder of images from a checkpoint."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Tuple

from torch.utils.data import DataLoader

from anomaly_kernels.data import PredictFolder
from anomaly_kernels.pipeline.fit import CHECKPOINT_KEY, make_trainer
from anomaly_kernels.pipeline.heatmaps import prediction_rows, write_overlays, write_scores_csv
from anomaly_kernels.pipeline.inputs import about, check_output_folder, load_torch_file, one_line
from anomaly_kernels.pipeline.models import MODEL_NAMES, model_class


def _metadata(checkpoint: Any, path: Path) -> Dict[str, Any]:
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    metadata = checkpoint.get(CHECKPOINT_KEY)
    if not metadata:
        raise ValueError(f"{path} was not written by 'anomaly-kernels fit' (no '{CHECKPOINT_KEY}' entry)")
    if not isinstance(metadata, dict) or metadata.get("model") not in MODEL_NAMES:
        raise ValueError(f"{path}: its '{CHECKPOINT_KEY}' entry names no known model (one of {MODEL_NAMES})")
    size = metadata.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{path}: its '{CHECKPOINT_KEY}' entry has no valid image size, got {size!r}")
    if not isinstance(checkpoint.get("hyper_parameters", {}), dict):
        raise ValueError(f"{path}: its 'hyper_parameters' entry is not a mapping")
    return metadata


def load_model(checkpoint: str | Path) -> Tuple[Any, Dict[str, Any]]:
    """Rebuild the fitted module saved by ``anomaly-kernels fit``; returns (module, metadata).

    The file is read with ``torch.load(weights_only=True)``: tensors and plain values only, so
    a checkpoint from an untrusted source cannot run code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not such a checkpoint: empty, truncated, not written by torch,
            without the metadata of ``fit``, or holding the settings or weights of another model.
    """
    path = Path(checkpoint)
    loaded = load_torch_file(path, "checkpoint")
    metadata = _metadata(loaded, path)
    cls = model_class(metadata["model"])
    settings = dict(loaded.get("hyper_parameters", {}))
    parameters = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(name for name in settings if name not in parameters and not takes_any)
    # The backbone weights come from the checkpoint: never download them again.
    settings["pre_trained"] = False
    try:
        if unknown:
            raise TypeError(f"unexpected settings {unknown}")
        module = cls(**settings)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path} is marked as a {metadata['model']} checkpoint but holds settings that model does not "
            f"take ({one_line(error)}); was it written by another program?"
        ) from None
    try:
        module.on_load_checkpoint(loaded)
        module.load_state_dict(loaded["state_dict"], strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path}: the saved weights do not fit a {metadata['model']} model ({one_line(error)})"
        ) from None
    return module, metadata


def predict_folder(
    checkpoint: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    accelerator: str = "cpu",
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Score every image of ``input_path`` (a folder or one file).

    Writes ``scores.csv`` (image_path, pred_score, pred_label) and, for models with anomaly
    maps, one ``heatmaps/<stem>.png`` overlay per image into ``output_dir``. The output folder,
    the checkpoint and the input are all checked before any image is scored.

    Returns:
        {"scores_csv": Path, "heatmaps": Path | None, "images": int}
    """
    with about("output_dir"):
        output_dir = check_output_folder(output_dir, files=("scores.csv",), folders=("heatmaps",))
    with about("batch_size"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive int, got {batch_size!r}")
    with about("checkpoint"):
        module, metadata = load_model(checkpoint)
    with about("input_path"):
        dataset = PredictFolder(input_path, image_size=metadata["image_size"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outputs = make_trainer(accelerator, progress, []).predict(module, dataloaders=loader)
    scores_csv = write_scores_csv(prediction_rows(outputs), output_dir / "scores.csv")
    heatmaps = None
    if outputs and outputs[0].get("anomaly_maps") is not None:
        heatmaps = output_dir / "heatmaps"
        for batch in outputs:
            write_overlays(batch["image_path"], batch["anomaly_maps"], heatmaps)
    return {"scores_csv": scores_csv, "heatmaps": heatmaps, "images": len(dataset)}
