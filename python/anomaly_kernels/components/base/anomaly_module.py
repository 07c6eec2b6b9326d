"""AnomalyModule, kept importable from its former place; it lives in :mod:`anomaly_kernels.lightning.anomaly_module`."""

from anomaly_kernels.lightning.anomaly_module import NORMALIZATION_METHODS, AnomalyModule, MinMax, ThresholdF1Score

__all__ = ["AnomalyModule", "MinMax", "NORMALIZATION_METHODS", "ThresholdF1Score"]
