"""Input checks shared by the components."""

from __future__ import annotations

import torch


def all_finite(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` holds no NaN or infinity.

    A float64 sum propagates any NaN or infinity and reads the data once without the full-size
    boolean temporary of ``torch.isfinite(tensor).all()`` (which, for a large memory bank, costs
    more than the work it guards). Only when the sum is not finite is the exact check run, so an
    overflowing sum of finite values is never reported as bad input.
    """
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    if bool(torch.isfinite(tensor.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(tensor).all())
