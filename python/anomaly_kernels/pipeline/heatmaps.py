"""What ``fit`` and ``predict`` write per image: a reviewer's panel and the predicted mask; scores as CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from anomaly_kernels.data.transforms import read_image
from anomaly_kernels.pipeline.outputs import overlay_name
from anomaly_kernels.pipeline.panels import ANOMALOUS, NORMAL, TEXT, colorize, overlay, render_panel, resize_map

__all__ = [
    "colorize", "overlay", "prediction_rows", "prediction_thresholds", "write_panels", "write_scores_csv",
]


def prediction_thresholds(module: Any) -> Tuple[float, float]:
    """(image, pixel) thresholds that a module's ``pred_labels`` / ``pred_masks`` compare against.

    0.5 for both when the module normalises its outputs, else its raw adaptive thresholds.
    """
    image_threshold, pixel_threshold = module._prediction_thresholds()
    return float(image_threshold), float(pixel_threshold)


def _save_png(image: Image.Image, target: Path) -> Path:
    """Save under a temporary name, then rename: an interrupted run leaves no half-written PNG."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        image.save(partial, format="PNG")
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    return target


def _display_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps for colouring: normalised maps (in [0, 1]) as they are, others min-max over the batch."""
    if maps.numel() and (maps.min() < 0 or maps.max() > 1):
        return (maps - maps.min()) / (maps.max() - maps.min()).clamp_min(1e-12)
    return maps


def _truth(batch: Dict[str, Any], index: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """The (H, W) bool ground-truth mask of image ``index``: from its mask file, empty for a normal
    image, ``None`` when the batch has no ground truth (``predict``)."""
    if "mask_path" not in batch:
        return None
    path = batch["mask_path"][index]
    if not path:
        return np.zeros(size, dtype=bool)
    return np.asarray(read_image(path, mode="L")) > 127


def _header(name: str, batch: Dict[str, Any], index: int, image_threshold: float) -> List[list]:
    score = float(batch["pred_scores"][index])
    anomalous = bool(batch["pred_labels"][index])
    lines = [[(name, TEXT)], [(f"score {score:.3f} (threshold {image_threshold:.3f})", TEXT)]]
    prediction = [("predicted: ", TEXT), ("anomalous" if anomalous else "normal", ANOMALOUS if anomalous else NORMAL)]
    if "label" in batch:
        truth = "anomalous" if int(batch["label"][index]) else "normal"
        defect = batch["defect_type"][index] if "defect_type" in batch else None
        if truth == "anomalous" and defect:
            truth = f"{truth} ({defect})"
        prediction.append((f"   truth: {truth}", TEXT))
    lines.append(prediction)
    return lines


def write_panels(
    batch: Dict[str, Any],
    panels_dir: Path,
    masks_dir: Path,
    thresholds: Tuple[float, float],
    names: Optional[Sequence[str]] = None,
) -> List[Path]:
    """Write, per image of a predict-step output, its panel and its predicted mask as PNGs.

    The anomaly map is resized to the image file's own size, and the mask is
    ``resized map >= pixel threshold`` (the rule of ``pred_masks``), saved as 0/255 grey PNG
    ``masks_dir/<name>.png``. The panel ``panels_dir/<name>.png`` shows, at that size, the image,
    the ground truth (when the batch carries ``mask_path``: ``fit``'s test images), the heat
    map over the image, the mask and its outline over the image, under the score, the
    threshold, the predicted label and the true label (when known); see
    :mod:`anomaly_kernels.pipeline.panels`.

    Args:
        batch: predict-step output with ``image_path`` (B strings), ``anomaly_maps``
            (B, 1, h, w), ``pred_scores`` (B,), ``pred_labels`` (B,) and optionally ``label``
            (B,), ``mask_path`` and ``defect_type`` (B strings each).
        panels_dir, masks_dir: where the PNGs go (created).
        thresholds: (image, pixel) thresholds, see :func:`prediction_thresholds`.
        names: file names without ``.png``, possibly with sub-folders (default: the source file
            names, see :func:`~anomaly_kernels.pipeline.outputs.overlay_name`).

    Returns:
        The panels written, in batch order.
    """
    image_threshold, pixel_threshold = thresholds
    maps = batch["anomaly_maps"].detach().float().cpu()[:, 0]
    display = _display_maps(maps)
    written = []
    for index, source in enumerate(batch["image_path"]):
        name = names[index] if names else overlay_name(source)
        image = np.asarray(read_image(source))
        size = image.shape[:2]
        mask = resize_map(maps[index], size) >= pixel_threshold
        heat = resize_map(display[index], size)
        panel = render_panel(image, heat, mask, _header(name, batch, index, image_threshold), _truth(batch, index, size))
        _save_png(Image.fromarray(mask.astype(np.uint8) * 255), masks_dir / f"{name}.png")
        written.append(_save_png(panel, panels_dir / f"{name}.png"))
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
