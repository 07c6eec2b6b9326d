"""OnePassAnomalyModule, kept importable from its former place; it lives in :mod:`anomaly_kernels.lightning.one_pass_module`."""

from anomaly_kernels.lightning.one_pass_module import OnePassAnomalyModule, batch_images

__all__ = ["OnePassAnomalyModule", "batch_images"]
