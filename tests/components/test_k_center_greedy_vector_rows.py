"""Rows padded for the CUDA passes' 16-byte loads keep every distance and the selection."""

import pytest
import torch

from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.components.sampling.k_center_greedy import pad_to_vector_rows


@pytest.mark.parametrize("dtype,width,expected", [(torch.float32, 303, 304), (torch.float32, 304, 304),
                                                  (torch.bfloat16, 303, 304), (torch.bfloat16, 9, 16),
                                                  (torch.float32, 1, 4)])
def test_padding_reaches_16_bytes_and_keeps_distances(dtype, width, expected):
    features = torch.randn(50, width).to(dtype)
    padded = pad_to_vector_rows(features)
    assert padded.shape == (50, expected) and padded.dtype == dtype
    assert (padded.shape[1] * padded.element_size()) % 16 == 0
    assert torch.equal(padded[:, :width], features) and not padded[:, width:].any()
    if expected == width:
        assert padded is features
    exact = "donot_use_mm_for_euclid_dist"  # zero columns add exact zeros; only the order of sums may differ
    torch.testing.assert_close(torch.cdist(padded.double(), padded.double(), compute_mode=exact),
                               torch.cdist(features.double(), features.double(), compute_mode=exact), rtol=1e-12, atol=1e-12)


def test_cuda_selection_with_unaligned_rows_equals_the_cpu_selection():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    # Integer-valued rows: every distance is exact on both devices, so the picks must be equal.
    # 3-D rows are measured as they are (no projection): 303 floats, not a multiple of 16 bytes.
    embedding = torch.randint(-8, 9, (3000, 303, 1)).float()
    cpu = KCenterGreedy(embedding, 0.02, progress=False, seed=1).select_coreset_idxs()
    cuda = KCenterGreedy(embedding.cuda(), 0.02, progress=False, seed=1).select_coreset_idxs()
    assert cuda == cpu
