"""Base classes: :class:`DynamicBufferModule` and the Lightning :class:`AnomalyModule`.

``AnomalyModule`` lives in :mod:`anomaly_kernels.lightning` (the layer above the components);
this documented path loads it on first use: it pulls in pytorch_lightning, which costs
seconds, and most users of the kernels never need it.
"""

from anomaly_kernels.components.base.dynamic_module import DynamicBufferModule

__all__ = ["AnomalyModule", "DynamicBufferModule"]


def __getattr__(name: str):
    if name == "AnomalyModule":
        from anomaly_kernels.lightning.anomaly_module import AnomalyModule

        return AnomalyModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
