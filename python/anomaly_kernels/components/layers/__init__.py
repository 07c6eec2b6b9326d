"""Neural-network layers shared by models: :class:`SSPCAB`."""

from __future__ import annotations

from anomaly_kernels.components.layers.sspcab import SSPCAB

__all__ = ["SSPCAB"]
