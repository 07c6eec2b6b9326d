"""Constructor-argument checks shared by the models: each failure names the argument and the value."""

from __future__ import annotations

import math
import numbers
from typing import Any, List, Sequence, Tuple

import timm

from anomaly_kernels.components.feature_extractors.feature_extractor import _feature_module_names


def check_backbone_layers(backbone: Any, layers: Any) -> List[str]:
    """``layers`` as a list after checking that every name is a feature layer of ``backbone``.

    :class:`~anomaly_kernels.components.FeatureExtractor` drops unknown layer names with a
    warning; a model built on fewer layers than asked would silently change its features, so
    the models reject them instead. The check runs before any weights are loaded.

    Raises:
        TypeError: ``backbone`` is not a string or ``layers`` is not a sequence of strings.
        ValueError: unknown backbone, empty or repeated layers, or a layer the backbone lacks.
    """
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a timm model name (str), got {type(backbone).__name__}")
    if not timm.is_model(backbone):
        raise ValueError(f"backbone must be a timm model name, got unknown model '{backbone}'")
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list or tuple of layer names, got {layers!r}")
    layers = list(layers)
    if not layers:
        raise ValueError("layers must name at least one feature layer, got an empty sequence")
    if not all(isinstance(layer, str) for layer in layers):
        raise TypeError(f"layers must contain only strings, got {layers!r}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must not repeat a name, got {layers}")
    available = _feature_module_names(backbone)
    unknown = [layer for layer in layers if layer not in available]
    if unknown:
        raise ValueError(
            f"layers {unknown} are not feature layers of backbone '{backbone}'; available layers: {available}"
        )
    return layers


def check_input_size(input_size: Any) -> Tuple[int, int]:
    """``input_size`` as a ``(height, width)`` pair of positive ints.

    Raises:
        TypeError: not a pair of ints.
        ValueError: a side smaller than 1.
    """
    if isinstance(input_size, str) or not isinstance(input_size, Sequence) or len(input_size) != 2:
        raise TypeError(f"input_size must be a (height, width) pair of ints, got {input_size!r}")
    if not all(isinstance(side, numbers.Integral) and not isinstance(side, bool) for side in input_size):
        raise TypeError(f"input_size must be a (height, width) pair of ints, got {input_size!r}")
    height, width = (int(side) for side in input_size)
    if height < 1 or width < 1:
        raise ValueError(f"input_size sides must be >= 1, got {input_size!r}")
    return height, width


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return int(value)


def check_finite_real(name: str, value: Any) -> float:
    """``value`` as a finite float, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)
