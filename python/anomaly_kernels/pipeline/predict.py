"""``anomaly-kernels predict``: anomaly maps and scores of a folder of images from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch.utils.data import DataLoader

from anomaly_kernels.data import PredictFolder
from anomaly_kernels.pipeline.checkpoint import load_model
from anomaly_kernels.pipeline.fit import make_trainer
from anomaly_kernels.pipeline.heatmaps import prediction_rows, prediction_thresholds, write_panels, write_scores_csv
from anomaly_kernels.pipeline.inputs import about, check_output_folder
from anomaly_kernels.pipeline.outputs import check_previous_outputs, remove_previous_outputs
from anomaly_kernels.pipeline.quiet import quiet_lightning

__all__ = ["load_model", "predict_folder"]

PREDICT_FILES = ("scores.csv",)
PREDICT_FOLDERS = ("heatmaps", "masks")


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
    """Score every image of ``input_path`` (a folder or one file).

    Writes ``scores.csv`` (image_path, pred_score, pred_label) and, for models with anomaly
    maps, per image a review panel ``heatmaps/<image file name>.png`` and its predicted mask
    ``masks/<image file name>.png``, both at the image's own size (see :func:`write_panels`),
    into ``output_dir`` (``a.png`` and ``a.jpg`` give ``a.png.png`` and ``a.jpg.png``). The output folder, the checkpoint and
    the input are all checked before any image is scored; sub-folders, files of other types and
    unreadable files of the input folder are skipped and listed in the result.

    Args:
        checkpoint: written by ``anomaly-kernels fit`` or by ``Trainer.save_checkpoint``.
        image_size: side of the input images, for a checkpoint that does not record it.
        progress: progress bars on stderr; ``None``: only when stderr is a terminal.
        overwrite: replace an earlier run's outputs in ``output_dir`` (refused otherwise).

    Returns:
        {"scores_csv": Path, "heatmaps": Path | None, "images": int,
         "skipped": [(Path, reason), ...], "replaced": [names of removed earlier outputs]}
    """
    with about("output_dir"):
        output_dir = check_output_folder(output_dir, files=PREDICT_FILES, folders=PREDICT_FOLDERS)
        replaced = check_previous_outputs(output_dir, PREDICT_FILES, PREDICT_FOLDERS, overwrite)
    with about("batch_size"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive int, got {batch_size!r}")
    with about("checkpoint"):
        module, metadata = load_model(checkpoint, image_size)
    with about("input_path"):
        dataset = PredictFolder(input_path, image_size=metadata["image_size"])
    remove_previous_outputs(output_dir, replaced)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with quiet_lightning():
        outputs = make_trainer(accelerator, progress, []).predict(module, dataloaders=loader)
    scores_csv = write_scores_csv(prediction_rows(outputs), output_dir / "scores.csv")
    heatmaps = None
    if outputs and outputs[0].get("anomaly_maps") is not None:
        heatmaps = output_dir / "heatmaps"
        for batch in outputs:
            write_panels(batch, heatmaps, output_dir / "masks", prediction_thresholds(module))
    return {
        "scores_csv": scores_csv, "heatmaps": heatmaps, "images": len(dataset),
        "skipped": list(dataset.skipped), "replaced": replaced,
    }
