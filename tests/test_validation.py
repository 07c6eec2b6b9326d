"""all_finite: the finiteness check used on large embeddings."""

import torch

from anomaly_kernels._validation import all_finite


def test_detects_nan_and_infinities_anywhere():
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.randn(300, 7)
        x[123, 4] = bad
        assert not all_finite(x)
        assert not all_finite(x.double())
    both = torch.zeros(10)
    both[1], both[2] = float("inf"), float("-inf")  # their sum is NaN: still reported
    assert not all_finite(both)


def test_overflowing_sum_of_finite_values_is_finite():
    x = torch.full((4,), 1e308, dtype=torch.float64)  # the sum overflows to inf
    assert all_finite(x)
    half = torch.full((100,), 60000.0, dtype=torch.float16)
    assert all_finite(half, chunk_elements=7)
    half[93] = float("nan")
    assert not all_finite(half, chunk_elements=7)  # found in a later chunk


def test_finite_empty_and_integer_inputs():
    assert all_finite(torch.randn(50, 3))
    assert all_finite(torch.empty(0, 3))
    assert all_finite(torch.arange(5))
