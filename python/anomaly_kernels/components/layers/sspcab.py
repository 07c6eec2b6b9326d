"""SSPCAB: self-supervised predictive convolutional attentive block (Ristea et al., CVPR 2022).

The block predicts each pixel from its surroundings only: a masked convolution whose kernel has
four ``k x k`` corner regions and a hidden centre, followed by squeeze-and-excitation channel
attention. Trained to reconstruct its input, it learns context-based prediction; a large
reconstruction error hints at an anomaly.

Geometry of the masked kernel (``k = kernel_size``, ``d = dilation``), offsets relative to the
output pixel along each axis: the corner regions cover ``[-(k + d), -(d + 1)]`` and
``[d + 1, k + d]``; the ``(2d + 1) x (2d + 1)`` centre (and the cross between the corners) is
never seen. The full receptive field is ``2(k + d) + 1`` wide.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale every channel by a gate computed from global context.

    ``gate = sigmoid(fc2(relu(fc1(mean_{H,W}(x)))))``, ``out = x * gate``.

    Args:
        channels: C.
        reduction_ratio: the bottleneck has ``C // reduction_ratio`` (>= 1) units.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction_ratio: int = 8) -> None:
        super().__init__()
        reduced = channels // reduction_ratio
        self.fc1 = nn.Linear(channels, reduced)
        self.fc2 = nn.Linear(reduced, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate the channels of x (B, C, H, W); returns (B, C, H, W)."""
        squeezed = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return x * gate[:, :, None, None]


class SSPCAB(nn.Module):
    """Masked-convolution + channel-attention block; output shape equals input shape.

    Args:
        in_channels: C of the input (B, C, H, W); also the number of output channels.
        kernel_size: side ``k`` of each of the four corner regions (odd, >= 1).
        dilation: distance ``d`` (>= 1) between the hidden centre pixel and the corner regions.
        reduction_ratio: channel reduction of the attention (``C // reduction_ratio`` must be >= 1).

    Each corner region is a ``k x k`` convolution (C -> C) over the input zero-padded by
    ``k + d`` on every side; corner ``(row, col)`` reads the padded input shifted by
    ``k + 2d + 1`` rows/columns for the bottom/right corners, so every corner output has the input's
    size for any odd ``k`` and any ``d``. The four outputs are summed, passed through ReLU and
    gated by :class:`ChannelAttention`.

    Example:
        >>> block = SSPCAB(16, kernel_size=3, dilation=2)
        >>> block(torch.randn(2, 16, 15, 20)).shape
        torch.Size([2, 16, 15, 20])
    """

    def __init__(self, in_channels: int, kernel_size: int = 1, dilation: int = 1, reduction_ratio: int = 8) -> None:
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(kernel_size, "kernel_size")
        _check_positive_int(dilation, "dilation")
        _check_positive_int(reduction_ratio, "reduction_ratio")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if in_channels // reduction_ratio < 1:
            raise ValueError(
                f"in_channels // reduction_ratio must be >= 1 for the attention bottleneck, "
                f"got in_channels={in_channels}, reduction_ratio={reduction_ratio}"
            )
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.reduction_ratio = reduction_ratio
        # Padding so the farthest corner tap (offset k + d) exists at the border.
        self.pad = kernel_size + dilation
        # Start of the bottom/right corner windows in padded coordinates: offset d + 1 from the
        # centre, which sits at padded index ``pad``; each window then spans H + k - 1 rows, which
        # a valid k x k convolution turns into exactly H output rows.
        self.crop = kernel_size + 2 * dilation + 1
        self.masked_conv1 = nn.Conv2d(in_channels, in_channels, kernel_size)  # top-left
        self.masked_conv2 = nn.Conv2d(in_channels, in_channels, kernel_size)  # top-right
        self.masked_conv3 = nn.Conv2d(in_channels, in_channels, kernel_size)  # bottom-left
        self.masked_conv4 = nn.Conv2d(in_channels, in_channels, kernel_size)  # bottom-right
        self.attention_layer = ChannelAttention(in_channels, reduction_ratio)

    def masked_convolution(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU of the sum of the four corner convolutions: (B, C, H, W) -> (B, C, H, W)."""
        self._check_input(x)
        height, width = x.shape[2], x.shape[3]
        padded = F.pad(x, (self.pad,) * 4)
        # Window length along each axis: H + k - 1 rows (resp. W + k - 1 columns).
        rows_top = slice(0, height + self.kernel_size - 1)
        rows_bottom = slice(self.crop, self.crop + height + self.kernel_size - 1)
        cols_left = slice(0, width + self.kernel_size - 1)
        cols_right = slice(self.crop, self.crop + width + self.kernel_size - 1)
        summed = (
            self.masked_conv1(padded[:, :, rows_top, cols_left])
            + self.masked_conv2(padded[:, :, rows_top, cols_right])
            + self.masked_conv3(padded[:, :, rows_bottom, cols_left])
            + self.masked_conv4(padded[:, :, rows_bottom, cols_right])
        )
        return F.relu(summed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict every pixel of x (B, C, H, W) from its masked surroundings; returns (B, C, H, W)."""
        return self.attention_layer(self.masked_convolution(x))

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a tensor (B, C, H, W), got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"input must have H, W >= 1, got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        """Summary of the block's configuration for ``print(block)``."""
        return (
            f"in_channels={self.in_channels}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, reduction_ratio={self.reduction_ratio}"
        )


def _check_positive_int(value: object, argument: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{argument} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{argument} must be >= 1, got {value}")
