"""The anomaly-map paths queue their GPU work without waiting for it: a host synchronisation per
call (reading a value back, a pageable copy) costs more than their kernels take. Checked with
torch.cuda.set_sync_debug_mode("error"), which raises on any synchronising call; the first call
of each path (band construction, allocator warm-up) runs before the check."""

from __future__ import annotations

import pytest
import torch

from anomaly_kernels import ops
from anomaly_kernels.components.filters import GaussianBlur2d, upsample_blur2d
from anomaly_kernels.packed_precision import pack_upper_triangle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _without_sync(call):
    call()  # warm-up: cached bands, allocator, library handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return call()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_gaussian_blur_queues_without_sync_on_cuda():
    blur = GaussianBlur2d(sigma=(4.0, 4.0), channels=1, kernel_size=(33, 33)).cuda()
    maps = torch.rand(32, 1, 224, 224, device="cuda")
    assert _without_sync(lambda: blur(maps)).shape == maps.shape


def test_upsample_blur_queues_without_sync_on_cuda():
    maps = torch.rand(32, 1, 28, 28, device="cuda")
    assert _without_sync(lambda: upsample_blur2d(maps, (224, 224))).shape == (32, 1, 224, 224)


@pytest.mark.parametrize("b,c", [(4, 100), (32, 550)])  # the native kernel and the cuBLAS route
def test_mahalanobis_queues_without_sync_on_cuda(b, c):
    embedding = torch.randn(b, c, 4, 4, device="cuda")
    mean = torch.zeros(c, 16, device="cuda")
    precision = torch.eye(c, device="cuda").expand(16, c, c).contiguous()
    full = _without_sync(lambda: ops.mahalanobis(embedding, mean, precision))
    packed = _without_sync(lambda: ops.mahalanobis(embedding, mean, pack_upper_triangle(precision)))
    torch.testing.assert_close(packed, full, rtol=1e-5, atol=1e-5)


def test_sparse_projection_transform_queues_without_sync_on_cuda():
    """The fitted pattern lives on the CPU; its device copy is made once, not in every call."""
    from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection

    x = torch.randn(5000, 1536, device="cuda")
    projection = SparseRandomProjection(eps=0.9, random_state=0).fit(x)
    assert _without_sync(lambda: projection.transform(x)).shape == (5000, projection.n_components)
