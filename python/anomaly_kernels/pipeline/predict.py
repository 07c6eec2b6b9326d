"""``anomaly-kernels predict``: anomaly maps and scores of a folder of images from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from anomaly_kernels.data import PredictFolder
from anomaly_kernels.pipeline.fit import CHECKPOINT_KEY, make_trainer
from anomaly_kernels.pipeline.heatmaps import prediction_rows, write_overlays, write_scores_csv
from anomaly_kernels.pipeline.models import model_class


def load_model(checkpoint: str | Path):
    """Rebuild the fitted module saved by ``anomaly-kernels fit``; returns (module, metadata)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    metadata = torch.load(path, map_location="cpu", weights_only=False).get(CHECKPOINT_KEY)
    if not metadata:
        raise ValueError(f"{path} was not written by 'anomaly-kernels fit' (no '{CHECKPOINT_KEY}' entry)")
    cls = model_class(metadata["model"])
    # The backbone weights come from the checkpoint: never download them again.
    module = cls.load_from_checkpoint(path, map_location="cpu", pre_trained=False)
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
    maps, one ``heatmaps/<stem>.png`` overlay per image into ``output_dir``.

    Returns:
        {"scores_csv": Path, "heatmaps": Path | None, "images": int}
    """
    module, metadata = load_model(checkpoint)
    dataset = PredictFolder(input_path, image_size=metadata["image_size"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outputs = make_trainer(accelerator, progress, []).predict(module, dataloaders=loader)
    output_dir = Path(output_dir)
    scores_csv = write_scores_csv(prediction_rows(outputs), output_dir / "scores.csv")
    heatmaps = None
    if outputs and outputs[0].get("anomaly_maps") is not None:
        heatmaps = output_dir / "heatmaps"
        for batch in outputs:
            write_overlays(batch["image_path"], batch["anomaly_maps"], heatmaps)
    return {"scores_csv": scores_csv, "heatmaps": heatmaps, "images": len(dataset)}
