"""Packed precisions (upper triangles row by row): the layout helpers, the fit that writes them,
the scoring kernels that read them in place, MultiVariateGaussian's buffers and checkpoints in
either layout, PaDiM and the exported form."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conformance import gaussians

from anomaly_kernels import ops, reference
from anomaly_kernels.batched_gaussian_fit import batched_gaussian_fit
from anomaly_kernels.components.stats import MultiVariateGaussian
from anomaly_kernels.deploy import operators
from anomaly_kernels.packed_precision import (
    channels_of_packed,
    pack_upper_triangle,
    packed_index,
    packed_length,
    unpack_upper_triangle,
)


def numpy_packed(matrices: np.ndarray) -> np.ndarray:
    """(P, C, C) -> (P, C(C+1)/2): row i's entries from column i on, row after row."""
    c = matrices.shape[-1]
    return np.stack([np.concatenate([m[i, i:] for i in range(c)]) for m in matrices])


def symmetric_gaussians(b, c, h, w, dtype, device, seed):
    """conformance.gaussians with exactly symmetric precisions (a @ a.T rounds unevenly)."""
    embedding, mean, precision = gaussians(b, c, h, w, dtype, device, seed)
    return embedding, mean, (precision + precision.mT) / 2


# ---- the layout -----------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 2, 5, 64])
def test_pack_and_unpack_against_numpy(c):
    matrices = torch.randn(3, c, c, dtype=torch.float64, generator=torch.Generator().manual_seed(c))
    symmetric = (matrices + matrices.mT) / 2
    packed = pack_upper_triangle(symmetric)
    assert packed.shape == (3, packed_length(c)) == (3, c * (c + 1) // 2)
    np.testing.assert_array_equal(packed.numpy(), numpy_packed(symmetric.numpy()))
    assert torch.equal(unpack_upper_triangle(packed), symmetric)
    # The lower triangle is never read: a matrix whose lower half is garbage packs the same.
    assert torch.equal(pack_upper_triangle(torch.triu(symmetric)), packed)


def test_packed_index_points_at_the_upper_entry():
    c = 6
    flat = torch.arange(packed_length(c))
    full = flat[packed_index(c)]
    for i in range(c):
        for j in range(c):
            low, high = min(i, j), max(i, j)
            assert int(full[i, j]) == sum(c - r for r in range(low)) + (high - low)


@pytest.mark.parametrize("length", [0, 2, 4, 5, 7, 11])
def test_lengths_that_are_not_triangular_are_named(length):
    with pytest.raises(ValueError, match=f"C\\*\\(C\\+1\\)/2 entries .* got a last dimension of {length}"):
        channels_of_packed(length)
    with pytest.raises(ValueError, match="C\\*\\(C\\+1\\)/2"):
        unpack_upper_triangle(torch.zeros(2, length))


def test_pack_rejects_non_square_matrices():
    with pytest.raises(ValueError, match=r"\(\.\.\., C, C\), got shape \(2, 3, 4\)"):
        pack_upper_triangle(torch.zeros(2, 3, 4))


# ---- the fit writes packed precisions ---------------------------------------------------------
@pytest.mark.parametrize("b,c", [(3, 17), (12, 5), (40, 33), (2, 1)])  # both routes, both SIMD widths
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_fit_is_the_upper_triangle_of_the_full_fit(device, b, c, dtype):
    g = torch.Generator().manual_seed(b + c)
    embedding = (torch.randn(b, c, 3, 4, generator=g, dtype=torch.float64) * 2 + 1).to(dtype=dtype, device=device)
    before = embedding.clone()
    mean, full = ops.gaussian_fit(embedding, 0.01)
    packed_mean, packed = ops.gaussian_fit(embedding, 0.01, packed=True)
    assert packed.shape == (12, packed_length(c)) and packed.dtype == dtype
    assert torch.equal(packed_mean, mean)
    assert torch.equal(packed, pack_upper_triangle(full))
    assert torch.equal(embedding, before)


@pytest.mark.parametrize("max_temporary_bytes", [1, 1 << 30])  # one position per chunk, all at once
def test_batched_route_packs_chunk_by_chunk(device, max_temporary_bytes):
    embedding = torch.randn(7, 9, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(device)
    _, full = batched_gaussian_fit(embedding, 0.01, max_temporary_bytes)
    _, packed = batched_gaussian_fit(embedding, 0.01, max_temporary_bytes, packed=True)
    assert torch.equal(packed, pack_upper_triangle(full))


def test_packed_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="packed must be a bool, got int"):
        ops.gaussian_fit(torch.randn(3, 2, 2, 2), 0.01, packed=1)


# ---- the scoring kernels read packed precisions in place ------------------------------------
def assert_same_scores(packed_scores, full_scores):
    """Bit for bit: the same entries meet the same arithmetic in the same order, in the CPU's
    column blocks and tail columns (gathered from the rows' ends) and in the CUDA kernel's
    tiles (the diagonal tiles' lower halves mirrored back)."""
    assert torch.equal(packed_scores, full_scores)


@pytest.mark.parametrize("c", [1, 7, 15, 16, 17, 63, 64, 65, 130])
@pytest.mark.parametrize("b", [1, 3, 9, 33])
def test_packed_scores_equal_full_scores(device, b, c):
    embedding, mean, precision = symmetric_gaussians(b, c, 3, 2, torch.float32, device, seed=b * 7 + c)
    packed = pack_upper_triangle(precision)
    native = torch.ops.anomaly_kernels.mahalanobis
    assert_same_scores(native(embedding, mean, packed), native(embedding, mean, precision))
    torch.testing.assert_close(
        ops.mahalanobis(embedding, mean, packed).double(),
        reference.mahalanobis(embedding.double(), mean.double(), precision.double()),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("b,c,h,w", [(2, 550, 2, 2), (5, 2048, 1, 1), (64, 70, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_scores_at_large_channels_and_full_image_groups(device, b, c, h, w, dtype):
    embedding, mean, precision = symmetric_gaussians(b, c, h, w, dtype, device, seed=c)
    packed = pack_upper_triangle(precision)
    native = torch.ops.anomaly_kernels.mahalanobis
    assert_same_scores(native(embedding, mean, packed), native(embedding, mean, precision))


@pytest.mark.parametrize("c", [5, 100, 550])
def test_packed_nan_and_infinity_stay_local(device, c):
    """As for full matrices: a NaN feature gives NaN, an infinite one (above the mean, with a
    positive matrix: every term positive) +inf, for its image and position only."""
    precision = (0.1 * torch.ones(c, c) + 0.5 * torch.eye(c)).expand(4, c, c).contiguous().to(device)
    mean = torch.zeros(c, 4, device=device)
    embedding = torch.rand(2, c, 2, 2, generator=torch.Generator().manual_seed(c)).to(device) + 0.1
    embedding[0, c - 1, 0, 1] = float("inf")  # in the CPU's tail columns when c is not a multiple of 16
    embedding[1, c // 2, 1, 0] = float("nan")
    out = ops.mahalanobis(embedding, mean, pack_upper_triangle(precision))
    expected = ops.mahalanobis(embedding, mean, precision)
    assert out[0, 0, 0, 1] == float("inf") and torch.isnan(out[1, 0, 1, 0])
    assert torch.isfinite(out).sum() == 6
    assert torch.equal(out.isnan(), expected.isnan())
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)


def test_packed_precision_starting_off_the_vector_grid(device):
    embedding, mean, precision = symmetric_gaussians(4, 33, 2, 3, torch.float32, device, seed=8)
    packed = pack_upper_triangle(precision)
    storage = torch.empty(packed.numel() + 1, dtype=packed.dtype, device=device)
    shifted = storage[1:].view_as(packed).copy_(packed)
    assert shifted.storage_offset() == 1
    assert torch.equal(ops.mahalanobis(embedding, mean, shifted), ops.mahalanobis(embedding, mean, packed))
    assert_same_scores(ops.mahalanobis(embedding, mean, shifted), ops.mahalanobis(embedding, mean, precision))


def test_batched_matmul_route_unpacks_chunk_by_chunk(device, monkeypatch):
    embedding, mean, precision = symmetric_gaussians(5, 40, 3, 7, torch.float32, device, seed=11)
    embedding[2, 3, 1, 4] = float("nan")
    monkeypatch.setattr(ops, "_MATMUL_SCORE_ELEMENTS", 3 * (5 * 40 + 40 * 40))  # 3 positions per chunk
    out = ops._mahalanobis_batched_matmul(embedding, mean, pack_upper_triangle(precision))
    expected = ops._mahalanobis_batched_matmul(embedding, mean, precision)
    assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().sum() == 1
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_packed_operators_pass_opcheck(device):
    embedding, mean, precision = symmetric_gaussians(3, 9, 2, 2, torch.float32, device, seed=3)
    torch.library.opcheck(torch.ops.anomaly_kernels.mahalanobis, (embedding, mean, pack_upper_triangle(precision)))
    torch.library.opcheck(torch.ops.anomaly_kernels.gaussian_fit, (embedding, 0.01, True))


def test_a_precision_of_neither_layout_is_named():
    embedding, mean, precision = symmetric_gaussians(2, 4, 2, 2, torch.float32, "cpu", seed=1)
    with pytest.raises(ValueError, match=r"or, packed, \(4, 10\) \(H\*W, C\*\(C\+1\)/2\), got \(4, 11\)"):
        ops.mahalanobis(embedding, mean, torch.zeros(4, 11))
    with pytest.raises(RuntimeError, match=r"packed, \[4, 10\]"):
        torch.ops.anomaly_kernels.mahalanobis(embedding, mean, torch.zeros(4, 11))


def test_exported_form_reads_packed_precisions():
    embedding, mean, precision = symmetric_gaussians(3, 12, 2, 3, torch.float32, "cpu", seed=6)
    torch.testing.assert_close(
        operators.mahalanobis(embedding, mean, pack_upper_triangle(precision)),
        operators.mahalanobis(embedding, mean, precision),
        rtol=0,
        atol=0,
    )


# ---- MultiVariateGaussian -----------------------------------------------------------------------
def _training_embedding(seed, batch=12, channels=5, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, channels, 3, 4, generator=generator, dtype=torch.float64) * 2 + 1).to(dtype)


def test_packed_module_halves_the_buffer_and_scores_the_same():
    full, packed = MultiVariateGaussian(5, 12), MultiVariateGaussian(5, 12, packed_precision=True)
    assert packed.inv_covariance.shape == (12, 15)
    assert torch.equal(unpack_upper_triangle(packed.inv_covariance), full.inv_covariance)  # identities
    embedding = _training_embedding(1)
    full.fit(embedding)
    mean, inverse = packed.fit(embedding)
    assert inverse is packed.inv_covariance and inverse.shape == (12, 15)
    assert torch.equal(mean, full.mean) and torch.equal(inverse, pack_upper_triangle(full.inv_covariance))
    queries = _training_embedding(2, batch=3)
    assert_same_scores(packed.mahalanobis(queries), full.mahalanobis(queries))
    # A dtype without a native kernel takes the batched-product form, unpacking on the way.
    half = queries.to(torch.bfloat16)
    assert torch.equal(packed.mahalanobis(half), full.mahalanobis(half))


@pytest.mark.parametrize("source_packed,target_packed", [(False, True), (True, False), (True, True)])
def test_checkpoints_load_across_layouts_without_touching_the_callers_state(source_packed, target_packed):
    source = MultiVariateGaussian(5, 12, packed_precision=source_packed)
    source.fit(_training_embedding(3))
    state = source.state_dict()
    saved = {name: tensor.clone() for name, tensor in state.items()}
    target = MultiVariateGaussian(5, 12, packed_precision=target_packed)
    target.load_state_dict(state, strict=True)
    assert bool(target.is_fitted) and target.inv_covariance.dim() == (2 if target_packed else 3)
    queries = _training_embedding(4, batch=2)
    assert_same_scores(target.mahalanobis(queries), source.mahalanobis(queries))
    assert state.keys() == saved.keys() and all(torch.equal(state[name], saved[name]) for name in saved)

    buffer = io.BytesIO()
    torch.save(target.state_dict(), buffer)
    buffer.seek(0)
    again = MultiVariateGaussian(5, 12, packed_precision=not target_packed)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert_same_scores(again.mahalanobis(queries), source.mahalanobis(queries))


def test_legacy_full_checkpoint_without_flag_loads_into_a_packed_module():
    source = MultiVariateGaussian(5, 12)
    source.fit(_training_embedding(5))
    legacy = {"mean": source.mean, "inv_covariance": source.inv_covariance}
    target = MultiVariateGaussian(5, 12, packed_precision=True)
    target.load_state_dict(legacy, strict=True)
    queries = _training_embedding(6, batch=2)
    assert bool(target.is_fitted)
    assert_same_scores(target.mahalanobis(queries), source.mahalanobis(queries))


def test_a_checkpoint_of_other_channels_is_still_a_size_mismatch():
    source = MultiVariateGaussian(6, 12)
    target = MultiVariateGaussian(5, 12, packed_precision=True)
    with pytest.raises(RuntimeError, match="size mismatch for inv_covariance"):
        target.load_state_dict(source.state_dict())


def test_packed_precision_must_be_a_bool():
    with pytest.raises(TypeError, match="packed_precision must be a bool, got str"):
        MultiVariateGaussian(5, 12, packed_precision="yes")


# ---- PaDiM ------------------------------------------------------------------------------------
def test_padim_with_packed_precisions_gives_the_same_maps_and_loads_full_checkpoints():
    from anomaly_kernels.models import PadimModel

    def model(packed):
        torch.manual_seed(0)
        return PadimModel(
            input_size=(32, 32), layers=("layer1", "layer2"), backbone="resnet18", pre_trained=False, n_features=8,
            packed_precision=packed,
        ).eval()

    full, packed = model(False), model(True)
    train = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    full.fit(full.embed(train))
    packed.fit(packed.embed(train))
    assert packed.gaussian.inv_covariance.shape == (64, 36)
    test = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(packed(test), full(test))
    loaded = model(True)
    loaded.load_state_dict(full.state_dict())
    assert torch.equal(loaded(test), full(test))


# ---- PaDiM with wide_resnet50_2 at 256 px within 16 GB of GPU memory ---------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("packed", [True, False])
def test_wide_resnet50_padim_gaussians_fit_and_score_within_16_gb_on_cuda(packed):
    """550 features at 64 x 64 positions from 391 training images (MVTec AD's largest
    category): the fit and the scoring of a batch of 32 stay under 14 GiB of allocated memory,
    leaving 2 GiB of a 16 GB card for the backbone and the CUDA context, in either layout (the
    unfitted identities are let go during the fit; packed precisions take half the rest). The
    cap is enforced (set_per_process_memory_fraction), not just measured."""
    gib = 1 << 30
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (base + 14 * gib) / total))
    try:
        generator = torch.Generator(device="cuda").manual_seed(0)
        train = torch.randn(391, 550, 64, 64, device="cuda", generator=generator)
        gaussian = MultiVariateGaussian(550, 64 * 64, packed_precision=packed).cuda()
        gaussian.fit(train)
        del train
        assert gaussian.inv_covariance.shape == ((4096, packed_length(550)) if packed else (4096, 550, 550))
        scores = gaussian.mahalanobis(torch.randn(32, 550, 64, 64, device="cuda", generator=generator))
        assert scores.shape == (32, 1, 64, 64) and bool(torch.isfinite(scores).all())
        assert torch.cuda.max_memory_allocated() - base < 14 * gib
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_a_pickled_module_from_before_the_option_keeps_working():
    """Modules pickled whole before packed_precision existed have no such attribute: the class
    default (full matrices) applies."""
    gaussian = MultiVariateGaussian(5, 12)
    del gaussian.__dict__["packed_precision"]
    buffer = io.BytesIO()
    torch.save(gaussian, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    restored.fit(_training_embedding(7))
    assert restored.inv_covariance.shape == (12, 5, 5)
    assert restored.mahalanobis(_training_embedding(8, batch=2).to(torch.bfloat16)).shape == (2, 1, 3, 4)


@pytest.mark.parametrize("packed", [True, False])
def test_a_checkpoint_of_other_positions_is_reported_with_its_own_shape(packed):
    target = MultiVariateGaussian(5, 12, packed_precision=packed)
    with pytest.raises(RuntimeError, match=r"copying a param with shape torch.Size\(\[13, 5, 5\]\) from checkpoint"):
        target.load_state_dict({"inv_covariance": torch.zeros(13, 5, 5)}, strict=False)
    with pytest.raises(RuntimeError, match=r"copying a param with shape torch.Size\(\[13, 15\]\) from checkpoint"):
        target.load_state_dict({"inv_covariance": torch.zeros(13, 15)}, strict=False)


# ---- the unfitted identities are not held through a fit --------------------------------------
@pytest.mark.parametrize("packed", [False, True])
def test_an_unfitted_module_lets_its_identities_go_while_fitting(packed, monkeypatch):
    """Two sets of precisions would coexist at the fit's peak otherwise (5 GB each for
    wide_resnet50_2 at 256 px); a fitted module keeps its Gaussians until the new ones exist."""
    gaussian = MultiVariateGaussian(5, 12, packed_precision=packed)
    held = []
    fit = gaussian._fit_gaussians

    def recording(embedding):
        held.append(gaussian.inv_covariance.numel())
        return fit(embedding)

    monkeypatch.setattr(gaussian, "_fit_gaussians", recording)
    gaussian.fit(_training_embedding(9))
    gaussian.fit(_training_embedding(10))
    assert held == [0, gaussian.inv_covariance.numel()]


@pytest.mark.parametrize("packed", [False, True])
def test_a_failed_fit_puts_the_identities_back(packed, monkeypatch):
    gaussian = MultiVariateGaussian(5, 12, packed_precision=packed).double()
    before = gaussian.inv_covariance.clone()

    def failing(embedding):
        raise ValueError("the covariance at position 3 is not positive definite")

    monkeypatch.setattr(gaussian, "_fit_gaussians", failing)
    with pytest.raises(ValueError, match="position 3"):
        gaussian.fit(_training_embedding(11))
    assert not bool(gaussian.is_fitted) and torch.equal(gaussian.inv_covariance, before)
    fitted = MultiVariateGaussian(5, 12, packed_precision=packed)
    fitted.fit(_training_embedding(12))
    gaussian.load_state_dict(fitted.state_dict())  # the pre-sized buffer is back
    assert bool(gaussian.is_fitted)
