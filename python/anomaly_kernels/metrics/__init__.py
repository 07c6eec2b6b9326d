"""Training-pipeline metrics: thresholds, curve metrics, normalisation statistics and helpers.

Image-level and pixel-level quality of anomaly scores, as an :class:`AnomalyModule` logs them:

- :class:`AdaptiveThreshold`: F1-optimal threshold (exact, or binned for pixels).
- :class:`AUROC`, :class:`AUPRO`: areas under the ROC and per-region-overlap curves (exact or binned).
- :class:`ThresholdF1Score`: F1 of ``score >= threshold``.
- :class:`MinMax`, :class:`AnomalyScoreDistribution`: persistent normalisation statistics, and
  :func:`normalize_min_max` / :func:`normalize_cdf`, which map the threshold to 0.5.
- :func:`create_metric_collection`: the logged metric collections by name.

Binned mode keeps a fixed-size :mod:`~anomaly_kernels.metrics.score_histogram` instead of every
score, so pixel statistics of a whole validation set cost the same memory as those of one image.
"""

from anomaly_kernels.metrics.adaptive_threshold import AdaptiveThreshold
from anomaly_kernels.metrics.anomaly_score_distribution import AnomalyScoreDistribution, ScoreStatistics
from anomaly_kernels.metrics.aupro import AUPRO
from anomaly_kernels.metrics.auroc import AUROC
from anomaly_kernels.metrics.cdf_normalization import normalize_cdf, standardize_log
from anomaly_kernels.metrics.collection import METRIC_NAMES, create_metric_collection
from anomaly_kernels.metrics.connected_regions import connected_components
from anomaly_kernels.metrics.f1 import ThresholdF1Score
from anomaly_kernels.metrics.min_max import MinMax
from anomaly_kernels.metrics.min_max_normalization import normalize_min_max
from anomaly_kernels.metrics.threshold_curve import ThresholdCurveMetric

__all__ = [
    "AUPRO",
    "AUROC",
    "METRIC_NAMES",
    "AdaptiveThreshold",
    "AnomalyScoreDistribution",
    "MinMax",
    "ScoreStatistics",
    "ThresholdCurveMetric",
    "ThresholdF1Score",
    "connected_components",
    "create_metric_collection",
    "normalize_cdf",
    "normalize_min_max",
    "standardize_log",
]
