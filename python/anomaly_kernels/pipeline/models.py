"""The models the command line trains, by name."""

from __future__ import annotations

from typing import Dict, Type

from anomaly_kernels.components.base import AnomalyModule

MODEL_NAMES = ("patchcore", "padim", "dfkde")


def model_class(name: str) -> Type[AnomalyModule]:
    """The Lightning module class of a model name ("patchcore", "padim" or "dfkde")."""
    from anomaly_kernels.models import DFKDE, PaDiM, PatchCore

    classes: Dict[str, Type[AnomalyModule]] = {"patchcore": PatchCore, "padim": PaDiM, "dfkde": DFKDE}
    if name not in classes:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")
    return classes[name]
