"""What an exported model records about itself, and the check of that record when it is loaded.

Both artefacts carry the same JSON record: in a ``torch.export`` archive as the extra file
:data:`METADATA_KEY`, in an ONNX model as the metadata property of that name. It names the
model, the input size the graph was traced for and its outputs, so the inferencer can check
images and name the outputs without the model's classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

METADATA_KEY = "anomaly_kernels.json"
# Raised when the graph's inputs or outputs change meaning; older records are refused.
METADATA_VERSION = 1
MODEL_NAMES = ("patchcore", "padim", "dfkde")


def describe(
    name: str, input_size: Tuple[int, int], outputs: Sequence[str], normalization: Any, thresholds: Tuple[float, float]
) -> str:
    """The JSON record of an exported model.

    Args:
        name: "patchcore", "padim" or "dfkde".
        input_size: (H, W) of the images the graph takes.
        outputs: names of the graph's outputs, in order.
        normalization: the module's ``normalization`` (``None``, "min_max" or "cdf").
        thresholds: (image, pixel) thresholds that ``pred_labels`` / ``pred_masks`` hold for the
            output scores and maps: 0.5 with normalisation, the raw thresholds without.
    """
    return json.dumps(
        {
            "version": METADATA_VERSION,
            "model": name,
            "input_size": [int(input_size[0]), int(input_size[1])],
            "outputs": list(outputs),
            "normalization": normalization,
            "thresholds": {"image": float(thresholds[0]), "pixel": float(thresholds[1])},
        },
        sort_keys=True,
    )


def parse(text: Any, path: Path) -> Dict[str, Any]:
    """The record of ``path`` as a dict, checked; a ValueError naming the file otherwise.

    Returns:
        ``{"version", "model", "input_size": (H, W), "outputs": tuple, "normalization",
        "thresholds": {"image", "pixel"}}``.
    """
    if text is None or text == "":
        raise ValueError(f"{path} was not written by anomaly_kernels.deploy.export_model (no '{METADATA_KEY}' record)")
    try:
        record = json.loads(text)
    except (TypeError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: its '{METADATA_KEY}' record is not a JSON object")
    if record.get("version") != METADATA_VERSION:
        raise ValueError(
            f"{path} was exported with record version {record.get('version')!r}; this version reads {METADATA_VERSION}: "
            "export the model again"
        )
    size = record.get("input_size")
    outputs = record.get("outputs")
    thresholds = record.get("thresholds")
    if (
        record.get("model") not in MODEL_NAMES
        or not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size))
        or not (isinstance(outputs, list) and outputs and all(isinstance(o, str) for o in outputs))
        or not (isinstance(thresholds, dict) and all(isinstance(thresholds.get(k), float) for k in ("image", "pixel")))
    ):
        raise ValueError(f"{path}: its '{METADATA_KEY}' record is damaged: {text[:200]}")
    return {**record, "input_size": (size[0], size[1]), "outputs": tuple(outputs)}
