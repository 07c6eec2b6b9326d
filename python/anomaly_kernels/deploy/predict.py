"""``anomaly-kernels predict`` for exported models: the same outputs as from a checkpoint, without Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch.utils.data import DataLoader

from anomaly_kernels.data import PredictFolder
from anomaly_kernels.deploy.inferencer import EXPORTED_SUFFIXES, Inferencer
from anomaly_kernels.pipeline.predict import PREDICT_FILES, PREDICT_FOLDERS
from anomaly_kernels.pipeline.predict import predict_folder as predict_from_checkpoint
from anomaly_kernels.pipeline.heatmaps import prediction_rows, write_panels, write_scores_csv
from anomaly_kernels.pipeline.inputs import about, check_output_folder
from anomaly_kernels.pipeline.outputs import check_previous_outputs, remove_previous_outputs

_DEVICES = {"cpu": "cpu", "gpu": "cuda"}


def predict_folder(
    checkpoint: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    accelerator: str = "cpu",
    batch_size: int = 16,
    progress: Optional[bool] = None,
    image_size: Optional[int] = None,
    overwrite: bool = False,
) -> dict:
    """:func:`anomaly_kernels.pipeline.predict_folder` that also takes an exported model.

    A ``.pt2`` or ``.onnx`` file of :func:`~anomaly_kernels.deploy.export_model` is run by the
    :class:`Inferencer` and writes the same files (``scores.csv`` and, with anomaly maps, the
    ``heatmaps/`` panels and ``masks/``); any other file is a checkpoint, handed to the pipeline.
    The arguments and the result are those of the pipeline's function; for an exported model,
    ``progress`` is unused and ``image_size``, when given, must be the model's.
    """
    if Path(checkpoint).suffix not in EXPORTED_SUFFIXES:
        return predict_from_checkpoint(
            checkpoint, input_path, output_dir, accelerator, batch_size, progress, image_size, overwrite
        )
    with about("output_dir"):
        output_dir = check_output_folder(output_dir, files=PREDICT_FILES, folders=PREDICT_FOLDERS)
        replaced = check_previous_outputs(output_dir, PREDICT_FILES, PREDICT_FOLDERS, overwrite)
    with about("batch_size"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive int, got {batch_size!r}")
    with about("accelerator"):
        if accelerator not in _DEVICES:
            raise ValueError(f"accelerator must be one of {sorted(_DEVICES)}, got {accelerator!r}")
    with about("checkpoint"):
        inferencer = Inferencer(checkpoint, device=_DEVICES[accelerator])
    with about("image_size"):
        if image_size is not None and (image_size, image_size) != tuple(inferencer.input_size):
            raise ValueError(f"{checkpoint} takes {tuple(inferencer.input_size)} images; image size {image_size} disagrees")
    with about("input_path"):
        dataset = PredictFolder(input_path, image_size=inferencer.input_size)
    remove_previous_outputs(output_dir, replaced)
    outputs = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        predicted = {key: value.cpu() for key, value in inferencer.predict(batch["image"]).items()}
        outputs.append({"image_path": batch["image_path"], **predicted})
    scores_csv = write_scores_csv(prediction_rows(outputs), output_dir / "scores.csv")
    heatmaps = None
    if "anomaly_maps" in inferencer.outputs:
        heatmaps = output_dir / "heatmaps"
        thresholds = (inferencer.thresholds["image"], inferencer.thresholds["pixel"])
        for batch in outputs:
            write_panels(batch, heatmaps, output_dir / "masks", thresholds)
    return {
        "scores_csv": scores_csv, "heatmaps": heatmaps, "images": len(dataset),
        "skipped": list(dataset.skipped), "replaced": replaced,
    }
