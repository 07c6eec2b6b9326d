"""PatchCore: patch embedding, coreset memory bank and scores against numpy/scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from anomaly_kernels.models import AnomalyMapGenerator, PatchCore, PatchcoreModel, reweighted_image_scores

SIZE = (32, 32)
LAYERS = ("layer1", "layer2")


def make_model(seed: int = 0, num_neighbors: int = 3) -> PatchcoreModel:
    torch.manual_seed(seed)
    return PatchcoreModel(
        input_size=SIZE, layers=LAYERS, backbone="resnet18", pre_trained=False, num_neighbors=num_neighbors
    )


def images(seed: int, count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fitted() -> PatchcoreModel:
    model = make_model()
    torch.manual_seed(0)
    model.subsample_embedding(model.embed(images(100, count=4)), sampling_ratio=0.25)
    return model


def average_pool_3x3(maps: np.ndarray) -> np.ndarray:
    """3×3 mean with zero padding counted in the average: (B, C, h, w) → same shape."""
    padded = np.pad(maps, ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = maps.shape[-2:]
    windows = [padded[..., dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.sum(windows, axis=0) / 9.0


def bilinear_upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel-centre aligned bilinear resize of (B, C, h, w) maps."""

    def axis(size_in: int, size_out: int):
        source = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0, None)
        low = np.minimum(np.floor(source).astype(int), size_in - 1)
        return low, np.minimum(low + 1, size_in - 1), source - low

    r0, r1, fr = axis(maps.shape[-2], height)
    c0, c1, fc = axis(maps.shape[-1], width)
    rows = maps[..., r0, :] * (1 - fr)[:, None] + maps[..., r1, :] * fr[:, None]
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc


def test_embedding_is_pooled_upsampled_and_concatenated():
    model = make_model()
    batch = images(1)
    features = {name: value.double().numpy() for name, value in model.feature_extractor(batch).items()}
    first = average_pool_3x3(features["layer1"])
    second = bilinear_upsample(average_pool_3x3(features["layer2"]), *first.shape[-2:])
    expected = np.concatenate([first, second], axis=1).transpose(0, 2, 3, 1).reshape(-1, 64 + 128)
    rows = model.embed(batch)
    assert rows.shape == (2 * 8 * 8, 192) and model.embedding_dim == 192
    np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, ratio", [(256, 0.25), (257, 0.1), (100, 1.0), (50, 0.02)])
def test_memory_bank_is_a_coreset_of_int_n_ratio_rows(rows, ratio):
    model = make_model()
    embedding = torch.randn(rows, 192, generator=torch.Generator().manual_seed(rows))
    original = embedding.clone()
    torch.manual_seed(0)
    model.subsample_embedding(embedding, ratio)
    bank = model.memory_bank
    assert bank.shape == (int(rows * ratio), 192)
    # Every bank row is a distinct row of the embedding.
    matches = cdist(bank.numpy(), embedding.numpy()).argmin(axis=1)
    assert len(set(matches.tolist())) == bank.shape[0]
    np.testing.assert_array_equal(bank.numpy(), embedding.numpy()[matches])
    assert torch.equal(embedding, original)


def test_reweighting_matches_hand_computed_example():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]], dtype=torch.float64)
    # The most anomalous patch [3, 0] is at distance 2 from its nearest bank row [1, 0]; the
    # 3 bank rows nearest to [1, 0] are itself, [0, 0] and [0, 2], at 2, 3 and √13 from [3, 0].
    score = reweighted_image_scores(
        max_scores=torch.tensor([2.0], dtype=torch.float64),
        max_features=torch.tensor([[3.0, 0.0]], dtype=torch.float64),
        nearest_bank_indices=torch.tensor([1]),
        memory_bank=bank,
        num_neighbors=3,
    )
    weight = 1.0 - math.exp(2.0) / (math.exp(2.0) + math.exp(3.0) + math.exp(math.sqrt(13.0)))
    assert score.item() == pytest.approx(weight * 2.0, rel=1e-12)


def test_reweighting_is_stable_for_large_distances():
    # exp(1000) overflows; the log-sum-exp form must still give the weight 1 - 1/2 (two equal terms).
    bank = torch.tensor([[0.0], [1e-9]], dtype=torch.float64)
    score = reweighted_image_scores(
        torch.tensor([1000.0], dtype=torch.float64), torch.tensor([[1000.0]], dtype=torch.float64),
        torch.tensor([0]), bank, num_neighbors=2,
    )
    assert score.item() == pytest.approx(500.0, rel=1e-6)


def test_one_neighbor_skips_reweighting_and_large_b_is_capped():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    arguments = (torch.tensor([2.0]), torch.tensor([[3.0, 0.0]]), torch.tensor([1]), bank)
    assert reweighted_image_scores(*arguments, num_neighbors=1).item() == 2.0
    capped = reweighted_image_scores(*arguments, num_neighbors=50).item()
    assert capped == pytest.approx(2.0 * (1.0 - math.exp(2.0) / (math.exp(2.0) + math.exp(3.0))), rel=1e-6)


def test_reweighting_rejects_inconsistent_shapes():
    bank = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="max_features \\(B, 2\\)"):
        reweighted_image_scores(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64), bank, 3)
    with pytest.raises(ValueError, match="memory_bank must be a non-empty"):
        reweighted_image_scores(torch.zeros(2), torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64), bank[:0], 3)


def test_scores_and_maps_match_brute_force(fitted):
    batch = images(2, count=3)
    anomaly_maps, pred_scores = fitted(batch)
    rows = fitted.embed(batch).double().numpy()
    bank = fitted.memory_bank.double().numpy()
    distances = cdist(rows, bank)
    patch_scores = distances.min(axis=1).reshape(3, 64)
    nearest = distances.argmin(axis=1).reshape(3, 64)
    expected_scores = []
    for image in range(3):
        worst = patch_scores[image].argmax()
        s_star, m_star = patch_scores[image, worst], nearest[image, worst]
        support = np.argsort(cdist(bank[[m_star]], bank)[0], kind="stable")[:3]
        support_distances = cdist(rows.reshape(3, 64, -1)[image, [worst]], bank[support])[0]
        expected_scores.append((1 - np.exp(s_star) / np.exp(support_distances).sum()) * s_star)
    np.testing.assert_allclose(pred_scores.numpy(), expected_scores, rtol=1e-4)
    expected_maps = AnomalyMapGenerator(SIZE)(torch.from_numpy(patch_scores).float().reshape(3, 1, 8, 8))
    assert anomaly_maps.shape == (3, 1, *SIZE)
    torch.testing.assert_close(anomaly_maps, expected_maps, rtol=1e-4, atol=1e-5)


def test_chunked_scoring_equals_single_chunk(fitted):
    batch = images(3)
    whole = fitted(batch)
    try:
        fitted.nn_chunk_size = 5
        chunked = fitted(batch)
    finally:
        fitted.nn_chunk_size = None
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_state_dict_round_trip_into_fresh_model(fitted):
    fresh = make_model(seed=1)
    assert fresh.memory_bank.shape == (0, 192)
    fresh.load_state_dict(fitted.state_dict())
    assert torch.equal(fresh.memory_bank, fitted.memory_bank)
    batch = images(4)
    for loaded, original in zip(fresh(batch), fitted(batch)):
        assert torch.equal(loaded, original)


def test_lightning_module_state_dict_round_trip(fitted):
    module = PatchCore(backbone="resnet18", layers=LAYERS, pre_trained=False, input_size=SIZE, num_neighbors=3)
    module.model.load_state_dict(fitted.state_dict())
    fresh = PatchCore(backbone="resnet18", layers=LAYERS, pre_trained=False, input_size=SIZE, num_neighbors=3)
    fresh.load_state_dict(module.state_dict())
    batch = {"image": images(5), "label": torch.tensor([0, 1])}
    expected, loaded = module.validation_step(batch, 0), fresh.validation_step(batch, 0)
    assert torch.equal(expected["anomaly_maps"], loaded["anomaly_maps"])
    assert torch.equal(expected["pred_scores"], loaded["pred_scores"])
    assert set(batch) == {"image", "label"}  # the caller's batch dict is not extended


def test_backbone_stays_frozen_in_training_mode():
    model = make_model()
    model.train()
    assert model.training and not model.feature_extractor.training
    assert not any(parameter.requires_grad for parameter in model.parameters())
    batch = images(6)
    first = model.embed(batch)
    assert torch.equal(model.embed(batch), first)
    assert not first.requires_grad


def test_images_are_not_modified(fitted):
    batch = images(7)
    copy = batch.clone()
    fitted(batch)
    fitted.embed(batch)
    assert torch.equal(batch, copy)


def test_unfitted_model_and_wrong_images_raise(fitted):
    with pytest.raises(RuntimeError, match="empty memory bank"):
        make_model()(images(8))
    with pytest.raises(ValueError, match="input_size"):
        fitted(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="images must have shape"):
        fitted(torch.rand(1, 1, *SIZE))
    with pytest.raises(TypeError, match="floating-point"):
        fitted(torch.ones(1, 3, *SIZE, dtype=torch.uint8))
    with pytest.raises(ValueError, match="selects no row"):
        make_model().subsample_embedding(torch.randn(5, 192), 0.1)
    with pytest.raises(ValueError, match="embedding must have shape"):
        make_model().subsample_embedding(torch.randn(50, 7), 0.1)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"layers": ("layer2", "layer9")}, ValueError, "layer9"),
        ({"layers": ()}, ValueError, "at least one"),
        ({"layers": "layer2"}, TypeError, "layers"),
        ({"backbone": "no_such_net"}, ValueError, "unknown model"),
        ({"coreset_sampling_ratio": 0.0}, ValueError, "coreset_sampling_ratio"),
        ({"coreset_sampling_ratio": 1.5}, ValueError, "coreset_sampling_ratio"),
        ({"coreset_sampling_ratio": "0.1"}, TypeError, "coreset_sampling_ratio"),
        ({"num_neighbors": 0}, ValueError, "num_neighbors"),
        ({"num_neighbors": 2.5}, TypeError, "num_neighbors"),
        ({"input_size": (64,)}, TypeError, "input_size"),
        ({"pre_trained": "yes"}, TypeError, "pre_trained"),
    ],
)
def test_bad_arguments_raise_before_loading_weights(options, error, message):
    # pre_trained=True by default: each error must come before any download is attempted.
    with pytest.raises(error, match=message):
        PatchCore(**options)
