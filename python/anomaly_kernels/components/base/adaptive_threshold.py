"""AdaptiveThreshold, kept importable from its original place; it lives in :mod:`anomaly_kernels.metrics`."""

from anomaly_kernels.metrics.adaptive_threshold import AdaptiveThreshold

__all__ = ["AdaptiveThreshold"]
