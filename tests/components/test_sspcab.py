"""Tests of SSPCAB: shape, the masked receptive field, an independent numpy reference, persistence."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from anomaly_kernels.components.layers import SSPCAB


def corner_offsets(kernel_size: int, dilation: int) -> list[int]:
    """Offsets (relative to the output pixel) covered by the corner regions along one axis."""
    before = list(range(-(kernel_size + dilation), -dilation))
    after = list(range(dilation + 1, dilation + kernel_size + 1))
    return before + after


def hand_built_mask(height: int, width: int, row: int, col: int, kernel_size: int, dilation: int) -> np.ndarray:
    """Input pixels the output at (row, col) may depend on: the four k x k corners, clipped to the image."""
    mask = np.zeros((height, width), dtype=bool)
    for dr in corner_offsets(kernel_size, dilation):
        for dc in corner_offsets(kernel_size, dilation):
            r, c = row + dr, col + dc
            if 0 <= r < height and 0 <= c < width:
                mask[r, c] = True
    return mask


def numpy_reference(block: SSPCAB, x: np.ndarray) -> np.ndarray:
    """SSPCAB forward written from the paper's description, in float64 numpy."""
    k, d = block.kernel_size, block.dilation
    batch, channels, height, width = x.shape
    reach = k + d
    padded = np.pad(x, ((0, 0), (0, 0), (reach, reach), (reach, reach)))
    # First offset of each corner region: top/left start at -(k + d), bottom/right at d + 1.
    corners = {
        "masked_conv1": (-(k + d), -(k + d)),
        "masked_conv2": (-(k + d), d + 1),
        "masked_conv3": (d + 1, -(k + d)),
        "masked_conv4": (d + 1, d + 1),
    }
    summed = np.zeros((batch, channels, height, width))
    for name, (row_start, col_start) in corners.items():
        conv = getattr(block, name)
        weight = conv.weight.detach().double().numpy()  # (C_out, C_in, k, k)
        summed += conv.bias.detach().double().numpy()[None, :, None, None]
        for u in range(k):
            for v in range(k):
                r0, c0 = reach + row_start + u, reach + col_start + v
                window = padded[:, :, r0 : r0 + height, c0 : c0 + width]  # (B, C_in, H, W)
                summed += np.einsum("oc,bchw->bohw", weight[:, :, u, v], window)
    activated = np.maximum(summed, 0.0)
    fc1, fc2 = block.attention_layer.fc1, block.attention_layer.fc2
    pooled = activated.mean(axis=(2, 3))
    hidden = np.maximum(pooled @ fc1.weight.detach().double().numpy().T + fc1.bias.detach().double().numpy(), 0.0)
    gate = 1.0 / (1.0 + np.exp(-(hidden @ fc2.weight.detach().double().numpy().T + fc2.bias.detach().double().numpy())))
    return activated * gate[:, :, None, None]


@pytest.mark.parametrize(("height", "width"), [(9, 9), (8, 10), (7, 12)])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_output_shape_equals_input_shape(kernel_size, dilation, height, width):
    torch.manual_seed(0)
    block = SSPCAB(8, kernel_size=kernel_size, dilation=dilation)
    x = torch.randn(2, 8, height, width)
    assert block(x).shape == x.shape


@pytest.mark.parametrize(("kernel_size", "dilation"), [(1, 1), (3, 1), (3, 2), (5, 1), (1, 3)])
def test_matches_numpy_reference(kernel_size, dilation):
    torch.manual_seed(1)
    block = SSPCAB(8, kernel_size=kernel_size, dilation=dilation, reduction_ratio=4).double()
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    expected = numpy_reference(block, x.numpy())
    np.testing.assert_allclose(block(x).detach().numpy(), expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(("kernel_size", "dilation"), [(1, 1), (3, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize(("row", "col"), [(10, 11), (2, 3), (0, 20), (19, 0)])
def test_receptive_field_is_the_four_corners(kernel_size, dilation, row, col):
    # Ones as weights and positive inputs keep the ReLU open, so every tap shows up in the gradient.
    torch.manual_seed(2)
    block = SSPCAB(8, kernel_size=kernel_size, dilation=dilation)
    with torch.no_grad():
        for name in ("masked_conv1", "masked_conv2", "masked_conv3", "masked_conv4"):
            getattr(block, name).weight.fill_(1.0)
            getattr(block, name).bias.zero_()
    height, width = 20, 21
    x = (torch.rand(1, 8, height, width) + 0.1).requires_grad_(True)
    block.masked_convolution(x)[0, 3, row, col].backward()

    depends_on = (x.grad[0] != 0).any(dim=0).numpy()
    expected = hand_built_mask(height, width, row, col, kernel_size, dilation)
    np.testing.assert_array_equal(depends_on, expected)
    assert not depends_on[row, col]  # the pixel itself is hidden
    assert expected.sum() > 0
    # Every input channel feeds each corner tap once.
    assert torch.equal(x.grad[0][:, torch.from_numpy(expected)], torch.ones(8, int(expected.sum())))


def test_gradients_flow_to_input_and_every_parameter():
    torch.manual_seed(3)
    block = SSPCAB(16, kernel_size=3, dilation=1)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    block(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_input_is_not_mutated():
    torch.manual_seed(4)
    block = SSPCAB(8, kernel_size=3)
    x = torch.randn(1, 8, 6, 6)
    before = x.clone()
    block(x)
    assert torch.equal(x, before)


def test_state_dict_round_trip_into_fresh_module():
    torch.manual_seed(5)
    block = SSPCAB(16, kernel_size=3, dilation=2, reduction_ratio=4)
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(6)
    fresh = SSPCAB(16, kernel_size=3, dilation=2, reduction_ratio=4)
    x = torch.randn(2, 16, 7, 9)
    assert not torch.equal(fresh(x), block(x))
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh(x), block(x))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_channels": 8, "kernel_size": 2}, ValueError, "kernel_size must be odd"),
        ({"in_channels": 8, "kernel_size": 0}, ValueError, "kernel_size must be >= 1"),
        ({"in_channels": 8, "kernel_size": 3.0}, TypeError, "kernel_size must be an int"),
        ({"in_channels": 8, "dilation": 0}, ValueError, "dilation must be >= 1"),
        ({"in_channels": 4, "reduction_ratio": 8}, ValueError, "in_channels // reduction_ratio"),
        ({"in_channels": 8, "reduction_ratio": 0}, ValueError, "reduction_ratio must be >= 1"),
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1"),
    ],
)
def test_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        SSPCAB(**kwargs)


def test_input_validation():
    block = SSPCAB(8)
    with pytest.raises(ValueError, match=r"shape \(B, 8, H, W\)"):
        block(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match=r"shape \(B, 8, H, W\)"):
        block(torch.randn(1, 4, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        block(torch.ones(1, 8, 5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="H, W >= 1"):
        block(torch.randn(1, 8, 0, 5))


def test_small_reduction_keeps_one_bottleneck_unit():
    block = SSPCAB(8, reduction_ratio=8)
    assert isinstance(block.attention_layer.fc1, nn.Linear) and block.attention_layer.fc1.out_features == 1
    assert block(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)
