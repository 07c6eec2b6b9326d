"""The inference graph of a fitted Lightning module: images in, ``predict_step``'s predictions out."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from anomaly_kernels.deploy.predictions import Predictions
from anomaly_kernels.deploy.scoring import DfkdeScoring, PadimScoring, PatchcoreScoring
from anomaly_kernels.lightning import AnomalyModule
from anomaly_kernels.models import DFKDE, PaDiM, PatchCore

# Model name -> (Lightning class, scoring graph class); the names are the command line's.
_SCORING = {"patchcore": (PatchCore, PatchcoreScoring), "padim": (PaDiM, PadimScoring), "dfkde": (DFKDE, DfkdeScoring)}
SCORE_OUTPUTS = ("pred_scores", "pred_labels")
MAP_OUTPUTS = SCORE_OUTPUTS + ("anomaly_maps", "pred_masks")


def model_name(module: AnomalyModule) -> str:
    """The name ("patchcore", "padim", "dfkde") of a Lightning module, or a TypeError naming the argument."""
    for name, (cls, _) in _SCORING.items():
        if isinstance(module, cls):
            return name
    raise TypeError(
        "checkpoint_or_module must be a checkpoint path or a PatchCore, PaDiM or DFKDE module, "
        f"got {type(module).__name__}"
    )


def output_names(name: str) -> Tuple[str, ...]:
    """Names of the graph's outputs, in order, for the model ``name``."""
    return SCORE_OUTPUTS if name == "dfkde" else MAP_OUTPUTS


class InferenceGraph(nn.Module):
    """Scoring of a fitted model followed by thresholds and normalisation.

    ``forward(images (B, 3, H, W) float32)`` returns ``(pred_scores (B,), pred_labels (B,) bool,
    anomaly_maps (B, 1, H, W), pred_masks (B, 1, H, W) bool)`` for PatchCore and PaDiM and
    ``(pred_scores, pred_labels)`` for DFKDE: what ``predict_step`` adds to a batch (see
    :func:`output_names`). The graph shares the module's weights and fitted buffers; it changes
    nothing in the module.

    Args:
        module: a fitted :class:`PatchCore`, :class:`PaDiM` or :class:`DFKDE`.

    Raises:
        TypeError: another kind of module.
        ValueError: the model is not fitted, or its normalisation lacks statistics.
    """

    def __init__(self, module: AnomalyModule) -> None:
        super().__init__()
        self.name = model_name(module)
        if not module.model.is_fitted:
            raise ValueError(
                f"checkpoint_or_module: the {type(module).__name__} model is not fitted (no "
                f"{'memory bank' if self.name == 'patchcore' else 'Gaussians' if self.name == 'padim' else 'density'}); "
                "train it (Trainer.fit) or load a fitted checkpoint before exporting"
            )
        self.scoring = _SCORING[self.name][1](module.model)
        self.predictions = Predictions(module, has_maps=self.name != "dfkde")

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # No torch.no_grad() here: it would wrap the traced graph in a grad-mode sub-graph. Nothing
        # in it requires gradients (frozen backbone, buffers), and the inferencer runs it without.
        anomaly_maps, pred_scores = self.scoring(images)
        return self.predictions(anomaly_maps, pred_scores)
