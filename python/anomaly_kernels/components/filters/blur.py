"""GaussianBlur2d: Gaussian smoothing of (B, C, H, W) maps with the native separable kernel."""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from anomaly_kernels import ops


def gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sampled Gaussian ``exp(-x² / 2σ²)`` at ``x = -(k//2) … k//2``, normalised to sum 1.

    Args:
        kernel_size: number of taps k, odd and positive.
        sigma: standard deviation in samples, positive.
        dtype: dtype of the returned taps (computed in float64 first).

    Returns:
        (kernel_size,) tensor.

    Example:
        >>> gaussian_kernel1d(3, 1.0)
        tensor([0.2741, 0.4519, 0.2741])
    """
    x = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    taps = torch.exp(-(x**2) / (2.0 * float(sigma) ** 2))
    return (taps / taps.sum()).to(dtype)


def same_padding(taps: int) -> Tuple[int, int]:
    """Samples padded (before, after) one axis so a ``taps``-long correlation keeps its size.

    Example:
        >>> same_padding(33), same_padding(4)
        ((16, 16), (1, 2))
    """
    before = (taps - 1) // 2
    return before, taps - 1 - before


def _pair(name: str, value, kind: type) -> Tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be a {kind.__name__} or a pair of them, got {value!r}")
    return values


def _factor_loaded_kernel(module: "GaussianBlur2d", incompatible_keys) -> None:
    # A module-level function (not a lambda), so that modules holding a blur stay picklable,
    # as spawned DDP processes need.
    module._factor_kernel()


class GaussianBlur2d(nn.Module):
    """Gaussian blur of (B, C, H, W) tensors, computed as two 1-D passes.

    The 2-D Gaussian is the outer product of two 1-D Gaussians, so blurring rows then columns
    gives the 2-D result with ``Ky + Kx`` instead of ``Ky * Kx`` multiply-adds per sample (66 vs
    1089 for the 33-tap kernel of sigma 4 that anomaly maps use). The kernel is built once here,
    independent of the input size; the number of channels is fixed at construction.

    Args:
        kernel_size: odd number of taps, or (ky, kx) for the H and W axes.
        sigma: standard deviation, or (sigma_y, sigma_x); positive.
        channels: number of channels C the input must have.
        normalize: scale the 2-D kernel to unit sum (the sampled Gaussian already sums to one,
            so both settings give the same kernel; kept for API compatibility).
        border_type: "reflect" (default), "replicate", "constant" or "circular", as in F.pad.
        padding: "same" keeps (H, W); "valid" returns (H - ky + 1, W - kx + 1).

    Buffers:
        kernel: (C, 1, ky, kx) 2-D kernel, as checkpoints of the original module store it.

    Example:
        >>> blur = GaussianBlur2d(kernel_size=33, sigma=4.0, channels=1)
        >>> blur(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])

    Gradients flow to the input through the separable adjoint (the kernel is a fixed buffer).
    """

    def __init__(
        self,
        kernel_size: Union[Tuple[int, int], int],
        sigma: Union[Tuple[float, float], float],
        channels: int,
        normalize: bool = True,
        border_type: str = "reflect",
        padding: str = "same",
    ) -> None:
        super().__init__()
        ky, kx = _pair("kernel_size", kernel_size, int)
        sy, sx = _pair("sigma", sigma, float)
        for k in (ky, kx):
            if not isinstance(k, int) or k <= 0 or k % 2 == 0:
                raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
        for s in (sy, sx):
            if not s > 0:
                raise ValueError(f"sigma must be positive, got {sigma!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if border_type not in ops.BORDER_TYPES:
            raise ValueError(f"border_type must be one of {ops.BORDER_TYPES}, got {border_type!r}")
        if padding not in ops.PADDINGS:
            raise ValueError(f"padding must be one of {ops.PADDINGS}, got {padding!r}")

        self.kernel_size = (ky, kx)
        self.sigma = (float(sy), float(sx))
        self.channels = channels
        self.normalize = normalize
        self.border_type = border_type
        self.padding = padding

        kernel_y, kernel_x = gaussian_kernel1d(ky, sy), gaussian_kernel1d(kx, sx)
        kernel_2d = torch.outer(kernel_y, kernel_x)
        if normalize:
            scale = kernel_2d.abs().sum()
            kernel_2d, kernel_x = kernel_2d / scale, kernel_x / scale
        self.register_buffer("kernel", kernel_2d.expand(channels, 1, ky, kx).contiguous())
        self.register_buffer("kernel_y", kernel_y, persistent=False)
        self.register_buffer("kernel_x", kernel_x, persistent=False)
        # The saved 2-D kernel is what the module applies: a loaded state dict may hold another
        # one, whose 1-D factors (or, if it has none, the 2-D kernel itself) then take over.
        self.separable = True
        self.register_load_state_dict_post_hook(_factor_loaded_kernel)

    def _factor_kernel(self) -> None:
        """Derive ``kernel_y`` and ``kernel_x`` from ``kernel`` when it is one separable kernel.

        A rank-1 kernel ``K = outer(u, v)`` has row sums ``u * sum(v)`` and column sums
        ``v * sum(u)``, so ``outer(row sums, column sums / sum(K))`` rebuilds it exactly.
        """
        kernel = self.kernel.detach().double()
        first = kernel[0, 0]
        total = first.sum()
        self.separable = False
        if bool((kernel == first).all()) and total != 0:
            kernel_y, kernel_x = first.sum(dim=1), first.sum(dim=0) / total
            scale = first.abs().max().clamp(min=1e-300)
            if bool(((torch.outer(kernel_y, kernel_x) - first).abs() <= 1e-6 * scale).all()):
                self.kernel_y = kernel_y.to(self.kernel_y.dtype)
                self.kernel_x = kernel_x.to(self.kernel_x.dtype)
                self.separable = True

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """Blur the input with the Gaussian.

        Args:
            input_tensor: (B, C, H, W) floating tensor with C == ``channels``. Half-precision
                inputs are blurred in float32 and returned in their own dtype.

        Returns:
            (B, C, H, W) for "same" padding, (B, C, H - ky + 1, W - kx + 1) for "valid".
        """
        if not isinstance(input_tensor, torch.Tensor):
            raise TypeError(f"input_tensor must be a torch.Tensor, got {type(input_tensor).__name__}")
        if input_tensor.dim() != 4 or input_tensor.shape[1] != self.channels:
            raise ValueError(
                f"input_tensor must have shape (B, {self.channels}, H, W), got {tuple(input_tensor.shape)}"
            )
        if not input_tensor.is_floating_point():
            raise TypeError(f"input_tensor must be a floating tensor, got {input_tensor.dtype}")
        compute_dtype = input_tensor.dtype if input_tensor.dtype == torch.float64 else torch.float32
        # Conversions only where needed: even a no-op .to() costs about a microsecond, which a
        # GPU blur of a few maps (a few microseconds of kernel time) would wait for.
        x = input_tensor if input_tensor.dtype == compute_dtype else input_tensor.to(compute_dtype)
        if not self.separable:  # a loaded kernel with no 1-D factors: the depthwise 2-D correlation
            return self._blur_2d(x).to(input_tensor.dtype)
        # The buffers straight from their dict: nn.Module's attribute fallback costs ~0.7 us each.
        buffers = self._buffers
        kernel_y, kernel_x = buffers["kernel_y"], buffers["kernel_x"]
        device = x.device
        if kernel_y.dtype != compute_dtype or kernel_x.dtype != compute_dtype or not kernel_y.device == kernel_x.device == device:
            kernel_y = kernel_y.to(device=device, dtype=compute_dtype)
            kernel_x = kernel_x.to(device=device, dtype=compute_dtype)
        ops.check_blur_fits(x, kernel_y, kernel_x, self.padding)
        # Input, kernels, border and padding are checked: past the second round of checks.
        out = ops.checked_separable_blur2d(x, kernel_y, kernel_x, self.border_type, self.padding == "same")
        return out if out.dtype == input_tensor.dtype else out.to(input_tensor.dtype)

    def _blur_2d(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            x = F.pad(x, same_padding(self.kernel_size[1]) + same_padding(self.kernel_size[0]), mode=self.border_type)
        return F.conv2d(x, self.kernel.to(device=x.device, dtype=x.dtype), groups=self.channels)
