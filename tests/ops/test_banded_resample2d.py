"""anomaly_kernels::banded_resample2d beyond the conformance table: argument errors, the CUDA
tiling edges, and upsample_blur2d against interpolation followed by a blur."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conformance import band
from cuda_sim import operators as simulated

from anomaly_kernels import ops, reference
from anomaly_kernels.components.filters import GaussianBlur2d, upsample_blur2d


@pytest.mark.parametrize("mode,border", list(itertools.product(["bilinear", "nearest"], ["reflect", "replicate", "constant", "circular"])))
def test_upsample_blur_equals_interpolate_then_blur(device, mode, border):
    maps = torch.rand(3, 2, 14, 10, device=device)
    blur = GaussianBlur2d(kernel_size=17, sigma=2.0, channels=2, border_type=border).to(device)
    options = {"align_corners": False} if mode == "bilinear" else {}
    expected = blur(F.interpolate(maps, size=(56, 40), mode=mode, **options))
    fused = upsample_blur2d(maps, (56, 40), kernel_size=17, sigma=2.0, mode=mode, border_type=border)
    torch.testing.assert_close(fused, expected, rtol=0, atol=2e-6)


def test_non_contiguous_input_and_untouched(device):
    maps = torch.rand(2, 1, 16, 12, device=device).transpose(2, 3)
    before = maps.clone()
    torch.testing.assert_close(upsample_blur2d(maps, (48, 64)), upsample_blur2d(maps.contiguous(), (48, 64)))
    assert torch.equal(maps, before)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(input=torch.randn(4, 4)), "input must be 4-D"),
        (dict(start_y=torch.tensor([0, 3])), "start_y with 2 taps must stay inside"),
        (dict(start_x=torch.tensor([-1, 0])), "start_x with 2 taps must stay inside"),
        (dict(weights_y=torch.ones(3, 2)), r"weights_y must have shape \(2, L\)"),
        (dict(start_x=torch.tensor([0.0, 1.0])), "start_x must be a 1-D int64 tensor"),
    ],
)
def test_bad_arguments_are_named(change, match):
    args = dict(input=torch.randn(1, 1, 4, 4), start_y=torch.tensor([0, 1]), weights_y=torch.ones(2, 2),
                start_x=torch.tensor([0, 2]), weights_x=torch.ones(2, 2))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        ops.banded_resample2d(**args)


def test_upsample_blur_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        upsample_blur2d(torch.rand(1, 1, 4, 4), (8, 8), mode="bicubic")
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        upsample_blur2d(torch.rand(1, 1, 4, 4), (8, 8), kernel_size=4)
    with pytest.raises(ValueError, match="size must be a pair"):
        upsample_blur2d(torch.rand(1, 1, 4, 4), (0, 8))


def test_native_check_of_band_bounds():
    with pytest.raises(RuntimeError, match="reads outside"):
        torch.ops.anomaly_kernels.banded_resample2d(
            torch.randn(1, 1, 4, 4), torch.tensor([3]), torch.ones(1, 2), torch.tensor([0]), torch.ones(1, 2)
        )


@pytest.mark.parametrize(
    "shape,out,taps",
    [
        ((1, 1, 5, 3), (7, 33), (2, 3)),  # one column past a tile
        ((2, 3, 28, 28), (224, 224), (6, 6)),
        ((1, 1, 300, 300), (70, 66), (4, 5)),  # scattered starts: windows too large to stage
        ((1, 1, 600, 5), (130, 7), (600, 2)),  # a band as long as the input
        ((3, 1, 224, 224), (224, 224), (33, 33)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_tiles_match_cpu(cuda_device, shape, out, taps, dtype):
    device = cuda_device
    x = torch.randn(*shape, dtype=dtype)
    start_y, weights_y = band(out[0], shape[2], taps[0], 5, dtype, "cpu")
    start_x, weights_x = band(out[1], shape[3], taps[1], 6, dtype, "cpu")
    expected = ops.banded_resample2d(x, start_y, weights_y, start_x, weights_x)
    result = ops.banded_resample2d(*(t.to(device) for t in (x, start_y, weights_y, start_x, weights_x)))
    scale = float(weights_y.abs().sum(1).max() * weights_x.abs().sum(1).max())  # bound of sum |terms| / max|x|
    tol = 1e-6 * scale if dtype == torch.float32 else 1e-12 * scale
    torch.testing.assert_close(result.cpu(), expected, rtol=1e-5, atol=tol)


def test_cuda_upsample_blur_anomaly_map_size(cuda_device):
    device = cuda_device
    maps = torch.rand(32, 1, 28, 28, dtype=torch.float64)
    expected = upsample_blur2d(maps, (224, 224))
    torch.testing.assert_close(upsample_blur2d(maps.float().to(device), (224, 224)).cpu().double(), expected, rtol=0, atol=2e-6)


def test_cuda_out_of_range_starts_are_clamped(cuda_device):
    # The CUDA operator reads its starts only on the device: a start outside the input reads the
    # nearest band inside it instead of memory outside the input.
    device = cuda_device
    x = torch.randn(2, 1, 6, 5, device=device)
    weights_y, weights_x = torch.randn(4, 3, device=device), torch.randn(3, 2, device=device)
    start_y = torch.tensor([-5, 100, 2, 4], device=device)
    start_x = torch.tensor([7, -1, 1], device=device)
    out = torch.ops.anomaly_kernels.banded_resample2d(x, start_y, weights_y, start_x, weights_x)
    expected = reference.banded_resample2d(x, start_y.clamp(0, 3), weights_y, start_x.clamp(0, 3), weights_x)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("shape,axis", [((1, 1, 0, 4), "start_y"), ((2, 1, 4, 0), "start_x"), ((1, 1, 2, 4), "start_y")])
def test_native_rejects_bands_longer_than_the_input(device, shape, axis):
    # An empty input (or fewer samples than taps) leaves no valid start: raise, as on the CPU.
    weights_y = torch.ones(3, 3, device=device)
    with pytest.raises(RuntimeError, match=f"{axis}.*reads outside"):
        torch.ops.anomaly_kernels.banded_resample2d(
            torch.randn(*shape, device=device), torch.zeros(3, dtype=torch.int64, device=device), weights_y,
            torch.zeros(2, dtype=torch.int64, device=device), torch.ones(2, 1 if axis == "start_y" else 3, device=device),
        )


# The CUDA kernel on the CPU simulation of the kernels (tests/cuda_sim), on every machine.
@pytest.mark.parametrize(
    "shape,out,taps",
    [
        ((1, 1, 5, 3), (7, 33), (2, 3)),
        ((2, 3, 28, 28), (224, 224), (6, 6)),
        ((1, 1, 300, 300), (70, 66), (4, 5)),
        ((1, 1, 600, 5), (130, 7), (600, 2)),
        ((1, 1, 224, 224), (224, 224), (33, 33)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simulated_cuda_tiles_match_cpu(shape, out, taps, dtype):
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(sum(out)))
    start_y, weights_y = band(out[0], shape[2], taps[0], 5, dtype, "cpu")
    start_x, weights_x = band(out[1], shape[3], taps[1], 6, dtype, "cpu")
    expected = ops.banded_resample2d(x, start_y, weights_y, start_x, weights_x)
    result = simulated.banded_resample2d(x, start_y, weights_y, start_x, weights_x)
    scale = float(weights_y.abs().sum(1).max() * weights_x.abs().sum(1).max())
    tol = 1e-6 * scale if dtype == torch.float32 else 1e-12 * scale
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=tol)


def test_simulated_cuda_out_of_range_starts_are_clamped():
    x = torch.randn(2, 1, 6, 5)
    weights_y, weights_x = torch.randn(4, 3), torch.randn(3, 2)
    start_y, start_x = torch.tensor([-5, 100, 2, 4]), torch.tensor([7, -1, 1])
    out = simulated.banded_resample2d(x, start_y, weights_y, start_x, weights_x)
    expected = reference.banded_resample2d(x, start_y.clamp(0, 3), weights_y, start_x.clamp(0, 3), weights_x)
    torch.testing.assert_close(out, expected)
