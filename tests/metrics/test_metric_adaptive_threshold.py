"""AdaptiveThreshold in exact and binned mode against a brute-force F1 search with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_recall_curve

from anomaly_kernels.components.base.adaptive_threshold import AdaptiveThreshold as ReExported
from anomaly_kernels.metrics import AdaptiveThreshold

NUM_BINS = 10_000


def brute_force(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Lowest F1-optimal threshold of ``score >= t`` and its F1, from sklearn's PR curve."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1].astype(np.float64), recall[:-1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[f1 >= f1.max() - 1e-12].min()), float(f1.max())


def collect(metric: AdaptiveThreshold, scores: torch.Tensor, labels: torch.Tensor, chunk: int = 997) -> float:
    for part_scores, part_labels in zip(scores.split(chunk), labels.split(chunk)):
        metric.update(part_scores, part_labels)
    return float(metric.compute())


def overlapping_classes(seed: int, size: int, rounded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(size, generator=generator) < 0.2).long()
    scores = torch.randn(size, generator=generator) * 1.5 + 3.0 * labels + 10.0
    if rounded:
        scores = torch.round(scores * 8) / 8  # ties inside the curve
    return scores.float(), labels


def test_old_import_path_still_works():
    assert ReExported is AdaptiveThreshold


@pytest.mark.parametrize("num_bins", [None, NUM_BINS])
@pytest.mark.parametrize("seed", [0, 1])
def test_ties_match_sklearn_exactly_in_both_modes(seed, num_bins):
    # Scores on a 1/8 grid: every bin holds at most one distinct score, so binning loses nothing.
    scores, labels = overlapping_classes(seed, 3000, rounded=True)
    value = collect(AdaptiveThreshold(num_bins=num_bins), scores, labels)
    expected, best_f1 = brute_force(scores.numpy(), labels.numpy())
    assert value == expected
    assert f1_score(labels.numpy(), scores.numpy() >= value) == pytest.approx(best_f1, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_agrees_with_exact_and_sklearn_on_many_scores(seed):
    scores, labels = overlapping_classes(seed, 60_000)
    binned = AdaptiveThreshold(num_bins=NUM_BINS)
    binned_value = collect(binned, scores, labels, chunk=4096)
    exact_value = collect(AdaptiveThreshold(), scores, labels, chunk=4096)
    expected, best_f1 = brute_force(scores.numpy(), labels.numpy())
    assert exact_value == expected
    score_range = float(scores.max() - scores.min())
    assert abs(binned_value - exact_value) <= 1e-3 * score_range
    # The binned threshold is a collected score, and its F1 (recomputed by sklearn) is near optimal.
    assert binned_value in set(scores.numpy().tolist())
    assert f1_score(labels.numpy(), scores.numpy() >= binned_value) == pytest.approx(best_f1, abs=1e-3)
    # Fixed memory: three float64 values a bin and four scalars, for 60_000 samples.
    assert sum(state.numel() for state in binned.metric_state.values()) == 3 * NUM_BINS + 4


def test_separable_classes_reach_f1_one_at_any_bin_count():
    # Two classes far apart: any threshold in the gap separates them; F1 = 1 in both modes.
    scores = torch.cat([torch.rand(1000) * 0.4, 0.6 + torch.rand(50) * 0.4])
    labels = torch.cat([torch.zeros(1000), torch.ones(50)]).long()
    for num_bins in (None, 2, 16, NUM_BINS):
        value = collect(AdaptiveThreshold(num_bins=num_bins), scores, labels)
        assert f1_score(labels.numpy(), scores.numpy() >= value) == 1.0


def test_ties_go_to_the_lowest_threshold():
    # t = 4: TP 1, FP 0, FN 1 -> F1 2/3;  t = 1: TP 2, FP 2, FN 0 -> F1 4/6 = 2/3; others lower.
    scores, labels = torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([1, 0, 0, 1])
    assert f1_score(labels, scores >= 4.0) == pytest.approx(f1_score(labels, scores >= 1.0))
    for num_bins in (None, NUM_BINS):
        threshold = AdaptiveThreshold(num_bins=num_bins)
        threshold.update(scores, labels)
        assert float(threshold.compute()) == 1.0


@pytest.mark.parametrize("num_bins", [None, NUM_BINS])
def test_all_normal_labels_warn_and_take_the_highest_score(num_bins):
    scores, _ = overlapping_classes(5, 500)
    threshold = AdaptiveThreshold(num_bins=num_bins)
    threshold.update(scores, torch.zeros(500, dtype=torch.long))
    with pytest.warns(UserWarning, match="no anomalous sample"):
        value = float(threshold.compute())
    assert value == float(scores.max())  # exact even when binned: the histogram keeps the maximum
    assert (scores.numpy() >= value).sum() == (scores == scores.max()).sum()


def test_merge_state_and_synchronised_states_equal_one_metric():
    scores, labels = overlapping_classes(9, 6000)
    halves = [AdaptiveThreshold(num_bins=NUM_BINS) for _ in range(2)]
    # Different ranges per half: the merge must re-grid.
    collect(halves[0], scores[:3000] * 0.5, labels[:3000])
    collect(halves[1], scores[3000:], labels[3000:])
    everything = torch.cat([scores[:3000] * 0.5, scores[3000:]])
    single = collect(AdaptiveThreshold(num_bins=NUM_BINS), everything, labels)

    merged = AdaptiveThreshold(num_bins=NUM_BINS)
    merged.merge_state(halves[0])
    merged.merge_state(halves[1])
    assert float(merged.compute()) == single

    # What a distributed sync leaves behind with dist_reduce_fx=None: every state stacked over ranks.
    synced = AdaptiveThreshold(num_bins=NUM_BINS)
    for name in halves[0].metric_state:
        setattr(synced, name, torch.stack([half.metric_state[name] for half in halves]))
    synced._update_count = 1
    assert float(synced.compute()) == single

    exact_halves = [AdaptiveThreshold() for _ in range(2)]
    collect(exact_halves[0], scores[:3000] * 0.5, labels[:3000])
    collect(exact_halves[1], scores[3000:], labels[3000:])
    exact_halves[0].merge_state(exact_halves[1])
    assert float(exact_halves[0].compute()) == float(collect(AdaptiveThreshold(), everything, labels))
    with pytest.raises(ValueError, match="num_bins"):
        merged.merge_state(AdaptiveThreshold())


def test_value_survives_reset_and_state_dict_in_binned_mode():
    threshold = AdaptiveThreshold(num_bins=NUM_BINS)
    threshold.update(torch.tensor([1.0, 7.0, 9.0]), torch.tensor([0, 1, 1]))
    threshold.compute()
    threshold.reset()
    assert float(threshold.value) == 7.0 and torch.isinf(threshold.score_low)
    fresh = AdaptiveThreshold(num_bins=NUM_BINS)
    fresh.load_state_dict(threshold.state_dict())
    assert float(fresh.value) == 7.0
    assert list(threshold.state_dict()) == ["value"]  # the histogram is not checkpointed


def test_binned_mode_rejects_bad_input_and_keeps_inputs():
    threshold = AdaptiveThreshold(num_bins=NUM_BINS)
    with pytest.raises(ValueError, match="finite"):
        threshold.update(torch.tensor([0.1, float("inf")]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="real-valued"):
        threshold.update(torch.tensor([True, False]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        threshold.update([0.1, 0.2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_bins must be at least 2"):
        AdaptiveThreshold(num_bins=1)
    with pytest.raises(TypeError, match="num_bins"):
        AdaptiveThreshold(num_bins=100.0)
    scores, labels = torch.tensor([0.3, 0.1, 0.2]), torch.tensor([1, 0, 0])
    threshold.update(scores, labels)
    threshold.compute()
    assert torch.equal(scores, torch.tensor([0.3, 0.1, 0.2])) and torch.equal(labels, torch.tensor([1, 0, 0]))
