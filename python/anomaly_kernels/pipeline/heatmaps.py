"""Anomaly maps as PNG heat-map overlays, and scores as CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from anomaly_kernels.data.transforms import read_image
from anomaly_kernels.pipeline.outputs import overlay_name

# A perceptually ordered dark-blue -> cyan -> yellow -> red ramp (anchor colours, interpolated).
_RAMP = np.array(
    [[0, 0, 96], [0, 64, 255], [0, 200, 255], [96, 255, 128], [255, 230, 0], [255, 96, 0], [200, 0, 0]],
    dtype=np.float32,
)


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours along the ramp."""
    position = np.clip(heat, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend (H, W, 3) uint8 ``image`` with the colourised (H, W) ``heat`` in [0, 1]."""
    coloured = colorize(heat).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + coloured * alpha).round().astype(np.uint8)


def write_overlays(
    image_paths: Sequence[str], anomaly_maps: torch.Tensor, output_dir: Path, names: Optional[Sequence[str]] = None
) -> List[Path]:
    """Write one overlay PNG per image: the original image resized to the map, the map on top.

    Args:
        image_paths: source image of each map.
        anomaly_maps: (B, 1, H, W) maps, scaled to [0, 1] for display (already normalised maps
            are shown as they are, others min-max over the batch).
        output_dir: where the PNGs go (created).
        names: file names without ``.png``, possibly with sub-folders (default: the source file
            names, see :func:`~anomaly_kernels.pipeline.outputs.overlay_name`).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    maps = anomaly_maps.detach().float().cpu()[:, 0]
    if maps.numel() and (maps.min() < 0 or maps.max() > 1):
        maps = (maps - maps.min()) / (maps.max() - maps.min()).clamp_min(1e-12)
    written = []
    for i, source in enumerate(image_paths):
        height, width = maps.shape[1:]
        image = np.asarray(read_image(source).resize((width, height), Image.BILINEAR))
        target = output_dir / ((names[i] if names else overlay_name(source)) + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(image, maps[i].numpy())).save(target)
        written.append(target)
    return written


def write_scores_csv(rows: Iterable[dict], path: Path) -> Path:
    """Write ``image_path, pred_score, pred_label[, label]`` rows to a CSV file."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["image_path", "pred_score", "pred_label"] + (["label"] if rows and "label" in rows[0] else [])
    # Written under a temporary name and renamed: an interrupted run leaves no half table.
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: row[key] for key in fields})
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def prediction_rows(outputs: Iterable[dict]) -> List[dict]:
    """Flatten predict-step outputs into one row per image."""
    rows = []
    for batch in outputs:
        labels = batch.get("label")
        for i, path in enumerate(batch["image_path"]):
            row = {
                "image_path": path,
                "pred_score": float(batch["pred_scores"][i]),
                "pred_label": int(batch["pred_labels"][i]),
            }
            if labels is not None:
                row["label"] = int(labels[i])
            rows.append(row)
    return rows
