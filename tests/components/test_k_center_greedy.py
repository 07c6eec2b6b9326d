"""KCenterGreedy against the plain greedy algorithm (reference.kcenter_greedy), with and without a seed."""

import pytest
import torch

from anomaly_kernels import reference
from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.sampling import KCenterGreedy


def _start_index(seed: int, n: int) -> int:
    """The random start KCenterGreedy draws after torch.manual_seed(seed) (no projection)."""
    torch.manual_seed(seed)
    return int(torch.randint(n, (1,)).item())


def _coverage_radius(features: torch.Tensor, idxs) -> float:
    return torch.cdist(features, features[idxs], compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1).max().item()


def test_identical_to_reference_on_integer_data(device):
    # Integer coordinates: every distance is computed exactly, so any order of summation agrees.
    g = torch.Generator().manual_seed(1)
    embedding = torch.randint(-50, 50, (500, 3, 4), generator=g).float().to(device)  # 3-D: no projection
    torch.manual_seed(7)
    idxs = KCenterGreedy(embedding, sampling_ratio=0.1, progress=False).select_coreset_idxs()
    expected = reference.kcenter_greedy(embedding.reshape(500, -1), 50, _start_index(7, 500))
    assert idxs == expected.tolist()


def test_identical_to_reference_on_separated_clusters_in_2d():
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(40, 16, generator=g) * 100
    embedding = (centers.repeat_interleave(10, 0) + torch.randn(400, 16, generator=g)).double()
    torch.manual_seed(3)
    sampler = KCenterGreedy(embedding, sampling_ratio=0.1)
    idxs = sampler.select_coreset_idxs()
    # D=16 is below the projection's target dimension, so distances are measured on the rows.
    expected = reference.kcenter_greedy(embedding.float(), 40, _start_index(3, 400))
    assert idxs == expected.tolist()
    # One pick per cluster: the greedy rule never takes a second point of a covered cluster.
    assert sorted(i // 10 for i in idxs) == list(range(40))


def test_projected_coverage_radius_matches_reference(device):
    embedding = torch.randn(3000, 512, generator=torch.Generator().manual_seed(4)).to(device)
    torch.manual_seed(5)
    sampler = KCenterGreedy(embedding, sampling_ratio=0.02, progress=False)
    idxs = sampler.select_coreset_idxs()
    features = sampler.features
    assert features.shape[1] < 512  # projected
    start = idxs[0]
    expected = reference.kcenter_greedy(features, len(idxs), start).tolist()
    native_radius, reference_radius = _coverage_radius(features, idxs), _coverage_radius(features, expected)
    assert abs(native_radius - reference_radius) <= 1e-5 * reference_radius
    # min_distances describe the finished coreset: their max is the coverage radius.
    assert sampler.min_distances.max().item() == pytest.approx(native_radius, rel=1e-5)


def test_start_row_is_in_the_coreset_and_indices_are_distinct():
    embedding = torch.randn(1000, 8)
    torch.manual_seed(11)
    idxs = KCenterGreedy(embedding, sampling_ratio=0.05).select_coreset_idxs()
    assert len(idxs) == 50 and len(set(idxs)) == 50
    assert idxs[0] == _start_index(11, 1000)
    assert all(isinstance(i, int) for i in idxs)


def test_same_seed_same_coreset_and_other_seed_differs():
    embedding = torch.randn(2000, 256)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(KCenterGreedy(embedding, sampling_ratio=0.01).select_coreset_idxs())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_selected_idxs_count_as_centers_and_are_not_returned():
    embedding = torch.arange(10, dtype=torch.float32).reshape(10, 1)  # points 0..9 on a line
    sampler = KCenterGreedy(embedding, sampling_ratio=0.2)
    idxs = sampler.select_coreset_idxs(selected_idxs=[0])
    # Farthest from 0 is 9; then the point farthest from {0, 9} is 4 (distance 4, smallest index).
    assert idxs == [9, 4]


def test_more_slots_than_distinct_rows_still_gives_distinct_indices():
    embedding = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(3, 1)  # 2 distinct rows, 6 copies
    torch.manual_seed(0)
    idxs = KCenterGreedy(embedding, sampling_ratio=1.0).select_coreset_idxs()
    assert sorted(idxs) == list(range(6))


def test_sample_coreset_returns_rows_of_the_original_embedding():
    embedding = torch.randn(400, 1024)
    before = embedding.clone()
    torch.manual_seed(0)
    sampler = KCenterGreedy(embedding, sampling_ratio=0.01)
    coreset = sampler.sample_coreset()
    torch.manual_seed(0)
    idxs = KCenterGreedy(embedding, sampling_ratio=0.01).select_coreset_idxs()
    assert torch.equal(coreset, embedding[idxs]) and coreset.shape == (4, 1024)
    assert torch.equal(embedding, before)


def test_documented_step_methods_match_the_reference():
    embedding = torch.randn(300, 3, 3)
    sampler = KCenterGreedy(embedding, sampling_ratio=0.1)
    with pytest.raises(ValueError, match="call update_distances"):
        sampler.get_new_idx()
    sampler.update_distances([5, 17])
    flat = embedding.reshape(300, -1)
    expected = torch.minimum(
        torch.linalg.vector_norm(flat - flat[5], dim=1), torch.linalg.vector_norm(flat - flat[17], dim=1)
    )
    torch.testing.assert_close(sampler.min_distances, expected)
    assert sampler.get_new_idx() == int(torch.argmax(expected))
    sampler.update_distances([])
    torch.testing.assert_close(sampler.min_distances, expected)
    sampler.reset_distances()
    assert sampler.min_distances is None


@pytest.mark.parametrize(
    "embedding,ratio,error,match",
    [
        (torch.randn(10, 4), 0.0, ValueError, r"sampling_ratio must be in \(0, 1\]"),
        (torch.randn(10, 4), -0.5, ValueError, r"sampling_ratio must be in \(0, 1\]"),
        (torch.randn(10, 4), 1.5, ValueError, r"sampling_ratio must be in \(0, 1\]"),
        (torch.randn(10, 4), 0.05, ValueError, "selects no row"),
        (torch.randn(10, 4), "0.1", TypeError, "sampling_ratio must be a float"),
        (torch.randn(10), 0.5, ValueError, "at least 2-D"),
        (torch.randn(0, 4), 0.5, ValueError, "must not be empty"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), 0.5, ValueError, "NaN"),
        (torch.ones(10, 4, dtype=torch.int64), 0.5, TypeError, "floating"),
        ([[0.0, 1.0]], 0.5, TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_named(embedding, ratio, error, match):
    with pytest.raises(error, match=match):
        KCenterGreedy(embedding, ratio)


def test_bad_selected_idxs():
    with pytest.raises(ValueError, match=r"selected_idxs must be row indices in \[0, 10\)"):
        KCenterGreedy(torch.randn(10, 2), 0.5).select_coreset_idxs([10])


def test_bfloat16_storage_selects_from_the_rounded_features():
    embedding = torch.randn(2000, 512, generator=torch.Generator().manual_seed(8))
    torch.manual_seed(2)
    sampler = KCenterGreedy(embedding, sampling_ratio=0.02, feature_dtype=torch.bfloat16)
    idxs = sampler.select_coreset_idxs()
    assert sampler.features.dtype == torch.bfloat16
    # Exactly the plain greedy selection on the bfloat16-rounded rows, measured in float32 ...
    expected = reference.kcenter_greedy(sampler.features.float(), len(idxs), idxs[0]).tolist()
    assert idxs == expected
    # ... whose coverage radius is close to the float32 selection's.
    torch.manual_seed(2)
    exact = KCenterGreedy(embedding, sampling_ratio=0.02)
    exact_idxs = exact.select_coreset_idxs()
    features = exact.features
    assert _coverage_radius(features, idxs) == pytest.approx(_coverage_radius(features, exact_idxs), rel=0.05)


def test_bad_feature_dtype():
    with pytest.raises(ValueError, match="feature_dtype must be torch.float32 or torch.bfloat16"):
        KCenterGreedy(torch.randn(10, 2), 0.5, feature_dtype=torch.float16)


def test_update_distances_rejects_rows_out_of_range():
    with pytest.raises(ValueError, match=r"cluster_centers must be row indices in \[0, 10\)"):
        KCenterGreedy(torch.randn(10, 2), 0.5).update_distances([10])


def test_seed_fixes_start_and_projection_whatever_the_global_rng():
    g = torch.Generator().manual_seed(9)
    embedding = torch.randint(-50, 50, (400, 6), generator=g).float()  # D=6: no projection, exact distances
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        runs.append(KCenterGreedy(embedding, sampling_ratio=0.05, seed=21).select_coreset_idxs())
    start = int(torch.randint(400, (1,), generator=torch.Generator().manual_seed(21)))
    assert runs[0] == runs[1] == reference.kcenter_greedy(embedding, 20, start).tolist()
    assert KCenterGreedy(embedding, sampling_ratio=0.05, seed=22).select_coreset_idxs() != runs[0]


def test_seeded_projection_is_the_seeded_sparse_random_projection():
    embedding = torch.randn(1000, 512, generator=torch.Generator().manual_seed(10))
    sampler = KCenterGreedy(embedding, sampling_ratio=0.01, seed=5)
    sampler.select_coreset_idxs()
    expected = SparseRandomProjection(eps=0.9, random_state=5).fit(embedding)
    assert torch.equal(sampler.model.sparse_random_matrix, expected.sparse_random_matrix)
    assert torch.equal(sampler.features, expected.transform(embedding))


@pytest.mark.parametrize("seed,error", [(-1, ValueError), (2**63, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_seed_is_named(seed, error):
    with pytest.raises(error, match="seed must be"):
        KCenterGreedy(torch.randn(10, 2), 0.5, seed=seed)


def test_selected_idxs_must_leave_room_for_the_coreset():
    sampler = KCenterGreedy(torch.randn(10, 2), 0.5)  # 5 picks
    assert len(sampler.select_coreset_idxs([0, 1, 2, 3, 4])) == 5
    with pytest.raises(ValueError, match=r"selected_idxs must leave at least coreset_size \(5\) of the 10 rows"):
        sampler.select_coreset_idxs([0, 1, 2, 3, 4, 5])


def test_progress_chunks_cover_every_pass_once_from_the_device_first_chunk(monkeypatch):
    # The native passes run in calls between progress-bar updates; the first call covers about
    # FIRST_CHUNK_BYTES of the device's type, the calls tile the picks without gap or overlap,
    # and the selection is the one a single call makes.
    from anomaly_kernels.components.sampling import k_center_greedy as module

    g = torch.Generator().manual_seed(5)
    embedding = torch.randn(3000, 8, generator=g)  # 8 columns: no projection
    calls = []
    native = module.ops.kcenter_greedy_

    def recording(features, min_distances, nearest, centers, begin, end, pick=True, prune=True):
        calls.append((begin, end, pick))
        native(features, min_distances, nearest, centers, begin, end, pick, prune)

    monkeypatch.setattr(module.ops, "kcenter_greedy_", recording)
    monkeypatch.setitem(module.FIRST_CHUNK_BYTES, "cpu", 3000 * 8 * 4 * 7)  # 7 full passes
    chunked = KCenterGreedy(embedding, sampling_ratio=0.1, progress=False, seed=1).select_coreset_idxs()
    picks = [(begin, end) for begin, end, pick in calls if pick]
    assert picks[0][1] - picks[0][0] == 7
    assert all(a[1] == b[0] for a, b in zip(picks, picks[1:])) and picks[-1][1] == 299
    assert len(picks) > 1
    monkeypatch.setitem(module.FIRST_CHUNK_BYTES, "cpu", 1e15)
    calls.clear()
    single = KCenterGreedy(embedding, sampling_ratio=0.1, progress=False, seed=1).select_coreset_idxs()
    assert len([c for c in calls if c[2]]) == 1
    assert chunked == single
