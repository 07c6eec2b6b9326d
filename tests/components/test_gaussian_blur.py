"""GaussianBlur2d against kornia's 2-D Gaussian blur and the plain 2-D convolution."""

import itertools

import kornia
import pytest
import torch

from anomaly_kernels.components.filters import GaussianBlur2d, gaussian_kernel1d


@pytest.mark.parametrize(
    "kernel_size,sigma,channels,border",
    list(itertools.product([3, 9, (5, 11), 33], [0.8, 4.0, (2.0, 1.0)], [1, 3], ["reflect", "replicate", "constant", "circular"])),
)
def test_equals_kornia_gaussian_blur(device, kernel_size, sigma, channels, border):
    torch.manual_seed(0)
    x = torch.rand(2, channels, 40, 48, device=device)
    blur = GaussianBlur2d(kernel_size=kernel_size, sigma=sigma, channels=channels, border_type=border).to(device)
    ks = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    sg = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    expected = kornia.filters.gaussian_blur2d(x, ks, sg, border_type=border)
    out = blur(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_valid_padding_equals_unpadded_convolution(device):
    x = torch.rand(3, 2, 50, 41, device=device)
    blur = GaussianBlur2d(kernel_size=(7, 5), sigma=(1.5, 2.5), channels=2, padding="valid").to(device)
    out = blur(x)
    expected = torch.nn.functional.conv2d(x, blur.kernel, groups=2)
    assert out.shape == (3, 2, 44, 37)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_kernel_buffer_is_the_normalised_2d_gaussian():
    blur = GaussianBlur2d(kernel_size=5, sigma=1.0, channels=3)
    x = torch.arange(5, dtype=torch.float64) - 2
    g = torch.exp(-(x**2) / 2)
    expected = torch.outer(g, g) / torch.outer(g, g).sum()
    assert blur.kernel.shape == (3, 1, 5, 5)
    torch.testing.assert_close(blur.kernel[1, 0].double(), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gaussian_kernel1d(5, 1.0, torch.float64), g / g.sum())


def test_half_precision_is_blurred_in_float32(device):
    x = torch.rand(1, 1, 32, 32, device=device)
    blur = GaussianBlur2d(kernel_size=9, sigma=2.0, channels=1).to(device)
    out = blur(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), blur(x), rtol=0, atol=2e-2)


def test_gradient_flows_to_the_input():
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64, requires_grad=True)
    blur = GaussianBlur2d(kernel_size=5, sigma=1.0, channels=2).double()
    assert torch.autograd.gradcheck(blur, (x,))
    with torch.no_grad():
        torch.testing.assert_close(blur(x), kornia.filters.gaussian_blur2d(x, (5, 5), (1.0, 1.0)))


def test_input_untouched_and_state_dict_round_trip():
    blur = GaussianBlur2d(kernel_size=33, sigma=4.0, channels=1)
    x = torch.rand(2, 1, 64, 64)
    before = x.clone()
    out = blur(x)
    assert torch.equal(x, before)
    fresh = GaussianBlur2d(kernel_size=33, sigma=4.0, channels=1)
    fresh.load_state_dict(blur.state_dict())
    assert torch.equal(fresh(x), out)
    assert list(blur.state_dict()) == ["kernel"]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(kernel_size=4, sigma=1.0, channels=1), ValueError, "kernel_size must be odd and positive"),
        (dict(kernel_size=0, sigma=1.0, channels=1), ValueError, "kernel_size must be odd and positive"),
        (dict(kernel_size=(3, 3, 3), sigma=1.0, channels=1), TypeError, "kernel_size must be"),
        (dict(kernel_size=3, sigma=0.0, channels=1), ValueError, "sigma must be positive"),
        (dict(kernel_size=3, sigma=-1.0, channels=1), ValueError, "sigma must be positive"),
        (dict(kernel_size=3, sigma=1.0, channels=0), ValueError, "channels must be a positive int"),
        (dict(kernel_size=3, sigma=1.0, channels=1, border_type="wrap"), ValueError, "border_type must be one of"),
        (dict(kernel_size=3, sigma=1.0, channels=1, padding="full"), ValueError, "padding must be one of"),
    ],
)
def test_bad_construction_is_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        GaussianBlur2d(**kwargs)


def test_bad_input_is_named():
    blur = GaussianBlur2d(kernel_size=3, sigma=1.0, channels=3)
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\), got \(1, 1, 8, 8\)"):
        blur(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        blur(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        blur(torch.ones(1, 3, 8, 8, dtype=torch.int64))
    valid = GaussianBlur2d(kernel_size=(5, 3), sigma=1.0, channels=1, padding="valid")
    with pytest.raises(ValueError, match=r"'valid' padding needs H >= 5 and W >= 3, got input shape \(1, 1, 4, 8\)"):
        valid(torch.rand(1, 1, 4, 8))


def test_loaded_kernel_is_the_kernel_applied(device):
    x = torch.rand(2, 1, 40, 48, device=device)
    wide = GaussianBlur2d(kernel_size=7, sigma=3.0, channels=1).to(device)
    narrow = GaussianBlur2d(kernel_size=7, sigma=0.8, channels=1).to(device)
    narrow.load_state_dict(wide.state_dict())
    assert torch.allclose(narrow(x), wide(x), atol=1e-6)

    # A kernel with no 1-D factors is applied as the 2-D correlation it is.
    other = torch.rand(1, 1, 7, 7, device=device)
    narrow.load_state_dict({"kernel": other})
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"), other)
    assert torch.allclose(narrow(x), expected, atol=1e-6)
    assert not torch.allclose(narrow(x), wide(x), atol=1e-3)
