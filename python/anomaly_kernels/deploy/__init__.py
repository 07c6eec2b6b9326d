"""Trained models for deployment: export to ``torch.export`` / ONNX, and an inferencer without Lightning.

- :func:`export_model`: a fitted PatchCore, PaDiM or DFKDE (a checkpoint file or the module) as
  a ``torch.export`` program (``model.pt2``, native operators kept) or an ONNX model
  (``model.onnx``, standard operators only): backbone, scoring, anomaly maps, thresholds and
  normalisation in one graph, for any batch size.
- :class:`Inferencer`: loads either file and returns scores, labels and, where the model makes
  them, anomaly maps and masks of a batch of images.
"""

from anomaly_kernels.deploy.export import EXPORT_FORMATS, export_model
from anomaly_kernels.deploy.inferencer import Inferencer

__all__ = ["EXPORT_FORMATS", "Inferencer", "export_model"]
