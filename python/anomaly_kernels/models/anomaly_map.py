"""AnomalyMapGenerator: patch scores (B, 1, h, w) → smooth pixel anomaly maps (B, 1, H, W)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from anomaly_kernels.components.filters import GaussianBlur2d, upsample_blur2d
from anomaly_kernels.models._arguments import check_finite_real, check_input_size


def blur_kernel_size(sigma: float) -> int:
    """Odd number of Gaussian taps covering ±4σ: ``2 * int(4σ + 0.5) + 1`` (33 for σ = 4)."""
    return 2 * int(4.0 * sigma + 0.5) + 1


class AnomalyMapGenerator(nn.Module):
    """Upsample patch scores to the input size and smooth them with a Gaussian.

    A patch score describes the receptive field of one feature-map position, so the coarse
    (h, w) grid is interpolated bilinearly (``align_corners=False``: pixel centres, as the
    features are laid out) to the input size (H, W) and then blurred with a Gaussian of
    standard deviation ``sigma`` pixels (kernel ``2 * int(4σ + 0.5) + 1`` taps, reflect border),
    which removes the blockiness of the upsampled grid. PatchCore and PaDiM use σ = 4.

    Args:
        input_size: (H, W) of the maps to produce, the size of the input images.
        sigma: standard deviation of the blur in pixels, > 0.

    Example:
        >>> generator = AnomalyMapGenerator(input_size=(64, 64))
        >>> generator(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, input_size: Tuple[int, int], sigma: float = 4.0) -> None:
        super().__init__()
        self.input_size = check_input_size(input_size)
        sigma = check_finite_real("sigma", sigma)
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = sigma
        self.blur = GaussianBlur2d(kernel_size=blur_kernel_size(sigma), sigma=sigma, channels=1, border_type="reflect")

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """Turn patch scores into pixel anomaly maps.

        Args:
            patch_scores: (B, 1, h, w) floating-point scores; not modified.

        Returns:
            (B, 1, H, W) anomaly maps, (H, W) = ``input_size``, dtype of ``patch_scores``.
        """
        if not isinstance(patch_scores, torch.Tensor):
            raise TypeError(f"patch_scores must be a torch.Tensor, got {type(patch_scores).__name__}")
        if not patch_scores.is_floating_point():
            raise TypeError(f"patch_scores must be a floating-point tensor, got dtype {patch_scores.dtype}")
        if patch_scores.dim() != 4 or patch_scores.shape[1] != 1 or patch_scores.numel() == 0:
            raise ValueError(f"patch_scores must have shape (B, 1, h, w), non-empty, got {tuple(patch_scores.shape)}")
        if torch.is_grad_enabled() and patch_scores.requires_grad:
            # The fused operator has no backward: the two steps are differentiable.
            upsampled = F.interpolate(patch_scores, size=self.input_size, mode="bilinear", align_corners=False)
            return self.blur(upsampled)
        # Upsampling and blur folded into one banded pass (no full-size intermediate).
        return upsample_blur2d(
            patch_scores, self.input_size, kernel_size=self.blur.kernel_size[0], sigma=self.sigma,
            mode="bilinear", border_type="reflect",
        )
