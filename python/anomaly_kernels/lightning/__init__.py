"""The Lightning layer: everything that makes the models Lightning modules, in one place.

- :class:`AnomalyModule` (:mod:`~anomaly_kernels.lightning.anomaly_module`): the base class that
  turns anomaly maps and scores into thresholds, metrics and normalised predictions. Its
  documented path ``anomaly_kernels.components.base.AnomalyModule`` stays importable.
- :class:`OnePassAnomalyModule` (:mod:`~anomaly_kernels.lightning.one_pass_module`): the base of
  models fitted from one pass over the training images (PatchCore, PaDiM, DFKDE).
- :mod:`~anomaly_kernels.lightning.ddp`: what those models need from Lightning's DDP strategy,
  and what they keep it from doing.

Above :mod:`anomaly_kernels.distributed` (plain torch.distributed collectives) and below
:mod:`anomaly_kernels.models`.
"""

from anomaly_kernels.lightning.anomaly_module import AnomalyModule
from anomaly_kernels.lightning.one_pass_module import OnePassAnomalyModule

__all__ = ["AnomalyModule", "OnePassAnomalyModule"]
