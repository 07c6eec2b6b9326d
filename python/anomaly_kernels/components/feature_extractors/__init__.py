"""Feature extraction: :class:`FeatureExtractor` returns intermediate maps of a timm CNN by layer name."""

from anomaly_kernels.components.feature_extractors.feature_extractor import FeatureExtractor

__all__ = ["FeatureExtractor"]
