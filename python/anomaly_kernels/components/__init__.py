"""Components of anomaly-detection models: the documented ``models.components`` API.

Every class is importable from here and from its subpackage (``base``,
``dimensionality_reduction``, ``feature_extractors``, ``filters``, ``freia``, ``layers``,
``sampling``, ``stats``; the nearest-neighbour search is in ``search``). ``AnomalyModule``
lives in :mod:`anomaly_kernels.lightning` and is loaded on first access because it imports
pytorch_lightning; ``FeatureExtractor`` likewise, because it imports timm (and timm torchvision,
which does not load beside every torch build): the other components work without them.
"""

from anomaly_kernels.components.base import DynamicBufferModule
from anomaly_kernels.components.dimensionality_reduction import PCA, SparseRandomProjection
from anomaly_kernels.components.filters import GaussianBlur2d
from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.components.stats import GaussianKDE, MultiVariateGaussian

__all__ = [
    "AnomalyModule",
    "DynamicBufferModule",
    "PCA",
    "SparseRandomProjection",
    "FeatureExtractor",
    "GaussianBlur2d",
    "KCenterGreedy",
    "GaussianKDE",
    "MultiVariateGaussian",
]


def __getattr__(name: str):
    if name == "AnomalyModule":
        from anomaly_kernels.lightning.anomaly_module import AnomalyModule

        return AnomalyModule
    if name == "FeatureExtractor":
        from anomaly_kernels.components.feature_extractors import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
