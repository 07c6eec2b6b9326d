"""Thresholds and normalisation of ``AnomalyModule.predict_step``, as graph operations.

The Lightning module turns raw scores into predictions with its fitted state: the image and
pixel thresholds and, with ``normalization``, the min-max or CDF statistics of the validation
scores. Here those values are read once and baked into the graph as constants, so an exported
model predicts what ``predict_step`` predicts without the module:

- ``pred_labels = pred_scores >= image_threshold`` and ``pred_masks = anomaly_maps >=
  pixel_threshold``, compared on the raw values (``predict_step`` compares normalised values
  with 0.5, which its normalisation makes the same test);
- normalised ``pred_scores`` / ``anomaly_maps`` as in :func:`~anomaly_kernels.metrics.
  normalize_min_max` and :func:`~anomaly_kernels.metrics.normalize_cdf`, computed in float32
  (the metrics use float64: the results agree to about 1e-7), and kept on their threshold's
  side of 0.5.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from anomaly_kernels.lightning import AnomalyModule

# The largest float32 below 0.5: where a normalised value below the threshold is pinned.
_BELOW_HALF = float(torch.nextafter(torch.tensor(0.5), torch.tensor(0.0)))


class Normalization(nn.Module):
    """One level's (image or pixel) normalisation: ``None``, ``"min_max"`` or ``"cdf"``.

    Args:
        method: the module's ``normalization``.
        threshold: the raw threshold of this level.
        low, high: min-max statistics (``"min_max"``).
        log_std: standard deviation of the log scores of this level (``"cdf"``).
    """

    def __init__(self, method: Optional[str], threshold: float, low: float = 0.0, high: float = 1.0, log_std: float = 1.0) -> None:
        super().__init__()
        self.method = method
        self.threshold = threshold
        self.low, self.high = low, high
        self.log_std = log_std
        self.log_threshold = math.log(threshold) if method == "cdf" else 0.0

    def forward(self, values: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
        """Normalised ``values``; ``above`` (bool, same shape) is ``values >= threshold``."""
        if self.method is None:
            return values
        if self.method == "min_max":
            normalized = ((values - self.threshold) / (self.high - self.low) + 0.5).clamp(0.0, 1.0)
        else:
            # Phi((log x - log t) / std): the log-score mean cancels (see normalize_cdf).
            shifted = (torch.log(values) - self.log_threshold) / self.log_std
            normalized = 0.5 * (1.0 + torch.erf(shifted / math.sqrt(2.0)))
        return torch.where(above, normalized.clamp(min=0.5), normalized.clamp(max=_BELOW_HALF))


def _finite(value: torch.Tensor | float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _normalizations(module: AnomalyModule, has_maps: bool) -> Tuple[Normalization, Normalization]:
    """The image and pixel :class:`Normalization` of a module, from its validation statistics.

    Raises:
        ValueError: ``normalization`` is set but the statistics were never collected (no
            validation epoch), or cannot normalise (a single value, non-positive CDF threshold).
    """
    method = module.normalization
    image_threshold = float(module.image_threshold.value)
    pixel_threshold = float(module.pixel_threshold.value)
    missing = (
        f"the model's normalization={method!r} needs the statistics of a validation epoch; "
        "run Trainer.fit or Trainer.validate (or load a checkpoint that holds them) before exporting"
    )
    if method is None:
        return Normalization(None, image_threshold), Normalization(None, pixel_threshold)
    if method == "min_max":
        low, high = _finite(module.min_max.min), _finite(module.min_max.max)
        if not high > low:  # also False for NaN: statistics never collected
            raise ValueError(missing)
        return (
            Normalization(method, image_threshold, low=low, high=high),
            Normalization(method, pixel_threshold, low=low, high=high),
        )
    statistics = module.score_distribution.statistics()
    image_std, pixel_std = _finite(statistics.image_std), _finite(statistics.pixel_std)
    if not image_std > 0 or (has_maps and not pixel_std > 0):
        raise ValueError(missing)
    if not (image_threshold > 0 and pixel_threshold > 0):
        raise ValueError(
            f"normalization='cdf' needs positive thresholds (log-normal scores), got image {image_threshold} "
            f"and pixel {pixel_threshold}"
        )
    # Without maps the pixel statistics stay empty and the pixel level is never used.
    pixel_std = pixel_std if has_maps else 1.0
    return (
        Normalization(method, image_threshold, log_std=image_std),
        Normalization(method, pixel_threshold, log_std=pixel_std),
    )


class Predictions(nn.Module):
    """Raw ``(anomaly_maps or None, pred_scores)`` → the predictions of ``predict_step``.

    Args:
        module: the fitted Lightning module whose thresholds and statistics are used.
        has_maps: whether the model makes anomaly maps (the pixel level is used).

    Raises:
        ValueError: see :func:`_normalizations`.
    """

    def __init__(self, module: AnomalyModule, has_maps: bool) -> None:
        super().__init__()
        self.image, self.pixel = _normalizations(module, has_maps)

    def thresholds(self) -> Tuple[float, float]:
        """(image, pixel) thresholds of the output scores and maps: 0.5 when normalised, else raw."""
        if self.image.method is not None:
            return 0.5, 0.5
        return self.image.threshold, self.pixel.threshold

    def forward(self, anomaly_maps: Optional[torch.Tensor], pred_scores: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(pred_scores (B,), pred_labels (B,) bool[, anomaly_maps (B, 1, H, W), pred_masks bool])``."""
        labels = pred_scores >= self.image.threshold
        outputs: Tuple[torch.Tensor, ...] = (self.image(pred_scores, labels), labels)
        if anomaly_maps is not None:
            masks = anomaly_maps >= self.pixel.threshold
            outputs += (self.pixel(anomaly_maps, masks), masks)
        return outputs
