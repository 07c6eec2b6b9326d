"""The batched torch.linalg route of gaussian_fit (used on CUDA), run here on any device."""

import numpy as np
import pytest
import torch

from anomaly_kernels.batched_gaussian_fit import batched_gaussian_fit, uses_image_space


def _numpy_fit(embedding, ridge):
    b, c, h, w = embedding.shape
    x = embedding.reshape(b, c, h * w).double().cpu().numpy()
    mean = x.mean(0)
    precision = np.stack([np.linalg.inv(np.cov(x[:, :, p], rowvar=False).reshape(c, c) + ridge * np.eye(c)) for p in range(h * w)])
    return mean, precision


@pytest.mark.parametrize("b,c", [(3, 8), (8, 8), (12, 5), (2, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("max_temporary_bytes", [1, 4096, 1 << 30])  # one position per chunk, a few, all
def test_matches_numpy_on_both_routes_and_any_chunking(device, b, c, dtype, max_temporary_bytes):
    g = torch.Generator().manual_seed(b * 10 + c)
    embedding = (torch.randn(b, c, 3, 5, generator=g, dtype=torch.float64) * 3 + 1).to(dtype=dtype, device=device)
    before = embedding.clone()
    mean, precision = batched_gaussian_fit(embedding, 0.01, max_temporary_bytes)
    assert mean.dtype == precision.dtype == dtype and precision.shape == (15, c, c)
    expected_mean, expected_precision = _numpy_fit(embedding, 0.01)
    tol = 1e-5 if dtype == torch.float32 else 1e-9
    scale = np.abs(expected_precision).max()
    np.testing.assert_allclose(precision.double().cpu().numpy(), expected_precision, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(mean.double().cpu().numpy(), expected_mean, rtol=tol, atol=tol)
    assert torch.equal(embedding, before)
    assert torch.equal(precision, precision.transpose(1, 2))  # mirrored, not just close


def test_route_choice():
    assert uses_image_space(4, 4, 0.01) and uses_image_space(3, 100, 0.01)
    assert not uses_image_space(5, 4, 0.01)
    assert not uses_image_space(3, 100, 0.0)  # the Woodbury form divides by the ridge


@pytest.mark.parametrize("b,c", [(3, 4), (6, 4)])
def test_degenerate_position_is_named_across_chunks(b, c):
    embedding = torch.randn(b, c, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(b))
    embedding[:, :, 1, 2] = 7.0  # position 6: zero covariance, singular without a ridge
    # Without a ridge only the feature-space route applies. With b <= c every position is
    # singular, but rounding can leave a rank-deficient covariance a tiny positive pivot: a
    # constant first channel makes the first pivot of every position exactly zero, so the
    # first position (0) is named whatever the random values.
    if b <= c:
        embedding[:, 0] = 1.0
    expected_position = 6 if b > c else 0
    with pytest.raises(RuntimeError, match=f"position {expected_position} is not positive definite"):
        batched_gaussian_fit(embedding, 0.0, max_temporary_bytes=1)


@pytest.mark.parametrize("b,c", [(4, 30), (30, 30), (60, 30)])
def test_float64_matches_numpy_at_high_variance(device, b, c):
    """Both routes in float64 when the data's variance dwarfs the ridge (variance / ridge ~ 1e7,
    where the image-space subtraction cancels the most digits)."""
    g = torch.Generator().manual_seed(b + c)
    mixing = torch.randn(c, c, generator=g, dtype=torch.float64) / c**0.5
    embedding = torch.einsum("bkp,kc->bcp", torch.randn(b, c, 6, generator=g, dtype=torch.float64), mixing) * 300.0
    embedding = (embedding.reshape(b, c, 2, 3) + 5.0).to(device)
    _, precision = batched_gaussian_fit(embedding, 0.01, max_temporary_bytes=200_000)
    _, expected = _numpy_fit(embedding, 0.01)
    np.testing.assert_allclose(precision.cpu().numpy(), expected, rtol=0, atol=1e-8 * np.abs(expected).max())
