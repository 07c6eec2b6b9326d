"""Keep normalised scores on the side of 0.5 that their raw score takes with respect to the threshold."""

from __future__ import annotations

import torch


def pin_to_threshold_side(normalized: torch.Tensor, above_threshold: torch.Tensor) -> torch.Tensor:
    """Force ``normalized >= 0.5`` exactly where ``above_threshold`` holds.

    A normalisation maps the threshold to 0.5 in exact arithmetic, but a raw score a few ulps
    below the threshold can round to exactly 0.5 (and a float32 cast can round up to it). Moving
    such values to the nearest representable number on the correct side changes them by at most
    one ulp and makes ``normalized >= 0.5`` equivalent to ``raw >= threshold``.

    Args:
        normalized: normalised scores, any shape, floating dtype.
        above_threshold: bool tensor of the same shape, ``raw >= threshold``.
    """
    half = torch.tensor(0.5, dtype=normalized.dtype, device=normalized.device)
    below_half = torch.nextafter(half, torch.zeros_like(half))
    return torch.where(above_threshold, torch.clamp(normalized, min=half), torch.clamp(normalized, max=below_half))
