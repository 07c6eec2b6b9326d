"""anomaly_kernels::gaussian_fit beyond the conformance table: numpy.cov + ridge as a second
oracle, both routes at high variance, exact symmetry, argument errors."""

import numpy as np
import pytest
import torch

from anomaly_kernels import ops, reference


@pytest.mark.parametrize("b,c,h,w", [(2, 1, 1, 1), (3, 4, 2, 3), (32, 100, 3, 7), (5, 17, 5, 4), (40, 9, 1, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_numpy_cov_inverse(device, b, c, h, w, dtype):
    g = torch.Generator().manual_seed(b * 31 + c)
    embedding = (torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2 + 1).to(dtype=dtype, device=device)
    mean, precision = ops.gaussian_fit(embedding, 0.01)
    assert mean.shape == (c, h * w) and precision.shape == (h * w, c, c)
    assert mean.dtype == dtype and precision.dtype == dtype
    x = embedding.reshape(b, c, h * w).double().cpu().numpy()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for p in {0, h * w // 2, h * w - 1}:
        cov = np.atleast_2d(np.cov(x[:, :, p], rowvar=False)) + 0.01 * np.eye(c)
        expected = np.linalg.inv(cov)
        got = precision[p].double().cpu().numpy()
        assert np.abs(got - expected).max() <= tol * np.abs(expected).max()
        np.testing.assert_allclose(mean[:, p].double().cpu().numpy(), x[:, :, p].mean(0), rtol=tol, atol=tol)
    # The whole tensor agrees with the batched reference, and precisions are symmetric.
    ref_mean, ref_precision = reference.gaussian_fit(embedding, 0.01)
    torch.testing.assert_close(precision, ref_precision, rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(mean, ref_mean, rtol=tol, atol=tol)
    assert torch.equal(precision, precision.transpose(1, 2))


def test_degenerate_covariance_without_ridge_is_reported():
    embedding = torch.ones(4, 3, 2, 2)  # zero covariance everywhere
    with pytest.raises(RuntimeError, match="not positive definite"):
        ops.gaussian_fit(embedding, 0.0)
    _, precision = ops.gaussian_fit(embedding, 0.5)
    torch.testing.assert_close(precision, torch.eye(3).expand(4, 3, 3) * 2)


@pytest.mark.parametrize(
    "embedding,ridge,error,match",
    [
        (torch.randn(3, 4, 5), 0.01, ValueError, "embedding must be 4-D"),
        (torch.randn(1, 4, 2, 2), 0.01, ValueError, "at least 2 images"),
        (torch.randn(3, 0, 2, 2), 0.01, ValueError, "at least one channel"),
        (torch.randn(3, 4, 2, 2).half(), 0.01, TypeError, "embedding must be float32"),
        (torch.randn(3, 4, 2, 2), -1.0, ValueError, "ridge must be >= 0"),
    ],
)
def test_bad_arguments_are_named(embedding, ridge, error, match):
    with pytest.raises(error, match=match):
        ops.gaussian_fit(embedding, ridge)


def test_cuda_kernel_is_registered_with_the_dispatcher():
    """The CUDA route is the operator's CUDA kernel (not a Python branch before the operator),
    so opcheck and torch.compile see it; this holds on machines without a GPU too."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key("anomaly_kernels::gaussian_fit", "CUDA")


@pytest.mark.parametrize("b,c", [(40, 9), (9, 40), (64, 130), (3, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_precision_is_exactly_symmetric(device, b, c, dtype):
    g = torch.Generator().manual_seed(b + c)
    embedding = (torch.randn(b, c, 2, 3, generator=g, dtype=torch.float64) * 3 + 1).to(dtype=dtype, device=device)
    _, precision = ops.gaussian_fit(embedding, 0.01)
    assert torch.equal(precision, precision.transpose(1, 2))
    _, expected = reference.gaussian_fit(embedding.double(), 0.01)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert (precision.double() - expected).abs().max() <= tol * expected.abs().max()


def test_per_position_baseline_agrees():
    embedding = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    mean, precision = reference.gaussian_fit_per_position(embedding, 0.01)
    expected_mean, expected_precision = reference.gaussian_fit(embedding, 0.01)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(precision, expected_precision)


@pytest.mark.parametrize("b,c", [(4, 30), (30, 30), (31, 30), (60, 30)])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_few_and_many_images_match_numpy_at_high_variance(b, c, scale):
    """Fewer images than channels take the (B, B) Woodbury route on the CPU, more take the
    (C, C) Cholesky route: both must match numpy in float64, also when the data's variance
    dwarfs the ridge (scale 300: variance / ridge ~ 1e7, where the Woodbury subtraction
    cancels the most digits)."""
    g = torch.Generator().manual_seed(b + c)
    # Correlated features: a random mixing of the channels, so the covariance is not diagonal.
    mixing = torch.randn(c, c, generator=g, dtype=torch.float64) / c**0.5
    embedding = torch.einsum("bkp,kc->bcp", torch.randn(b, c, 6, generator=g, dtype=torch.float64), mixing) * scale
    embedding = embedding.reshape(b, c, 2, 3) + 5.0
    mean, precision = ops.gaussian_fit(embedding, 0.01)
    x = embedding.reshape(b, c, 6).numpy()
    for p in range(6):
        expected = np.linalg.inv(np.cov(x[:, :, p], rowvar=False) + 0.01 * np.eye(c))
        np.testing.assert_allclose(precision[p].numpy(), expected, rtol=0, atol=1e-8 * np.abs(expected).max())
        # The quadratic form of a training vector: small for the data's own directions, where
        # the Woodbury route's cancellation would show first.
        d = x[0, :, p] - x[:, :, p].mean(0)
        expected_form = d @ expected @ d
        assert abs(d @ precision[p].numpy() @ d - expected_form) <= 1e-7 * abs(expected_form)
