"""create_metric_collection: the logged image/pixel metrics of an AnomalyModule, by name."""

from __future__ import annotations

from typing import Callable, Sequence

from torchmetrics import Metric, MetricCollection

from anomaly_kernels.metrics.aupro import AUPRO
from anomaly_kernels.metrics.auroc import AUROC
from anomaly_kernels.metrics.f1 import ThresholdF1Score

# Name (as logged after the prefix) -> factory taking num_bins. F1 keeps four counts: it has no bins.
_METRICS: dict[str, Callable[[int | None], Metric]] = {
    "F1Score": lambda num_bins: ThresholdF1Score(),
    "AUROC": lambda num_bins: AUROC(num_bins=num_bins),
    "AUPRO": lambda num_bins: AUPRO(num_bins=num_bins),
}

#: Metric names accepted by :func:`create_metric_collection`, case-sensitive as logged.
METRIC_NAMES: tuple[str, ...] = tuple(_METRICS)


def create_metric_collection(
    names: Sequence[str], prefix: str, num_bins: int | None = None
) -> MetricCollection:
    """Build the metrics ``names`` as a collection logged as ``<prefix><name>``.

    ``"F1Score"`` is :class:`ThresholdF1Score` (F1 at a threshold set by its owner), ``"AUROC"``
    is :class:`AUROC` of raw scores, ``"AUPRO"`` is :class:`AUPRO` (needs (B, 1, H, W) maps and
    masks: a pixel metric). The collection computes each metric on its own (no compute groups).

    Args:
        names: metric names, e.g. ``["F1Score", "AUROC"]``; may be empty; no duplicates.
        prefix: prefix of the logged names, e.g. ``"image_"`` or ``"pixel_"``.
        num_bins: ``None`` for exact curve metrics, else the histogram size of their binned mode.

    Returns:
        A :class:`torchmetrics.MetricCollection` keyed by name (``collection["AUROC"]``).

    Raises:
        TypeError: ``names`` is a single string or holds non-strings, or ``prefix`` is not a string.
        ValueError: unknown or repeated names (the message lists the valid names).

    Example:
        >>> collection = create_metric_collection(["F1Score", "AUROC"], prefix="image_")
        >>> sorted(collection.keys(keep_base=False))
        ['image_AUROC', 'image_F1Score']
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"names must be a list of metric names such as {list(METRIC_NAMES)}, got {names!r}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {prefix!r}")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"metric names must be strings, got {name!r}")
    unknown = [name for name in names if name not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metric names {unknown}; valid names are {list(METRIC_NAMES)}")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"metric names must not repeat, got {repeated} more than once")
    return MetricCollection(
        {name: _METRICS[name](num_bins) for name in names}, prefix=prefix, compute_groups=False
    )

