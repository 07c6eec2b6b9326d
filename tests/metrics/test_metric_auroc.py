"""AUROC of raw scores, exact and binned, against sklearn.metrics.roc_auc_score."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomaly_kernels.metrics import AUROC

NUM_BINS = 10_000


def collect(metric: AUROC, scores: torch.Tensor, labels: torch.Tensor, chunk: int = 1000) -> float:
    for part_scores, part_labels in zip(scores.split(chunk), labels.split(chunk)):
        metric.update(part_scores, part_labels)
    return float(metric.compute())


def scores_and_labels(seed: int, size: int, rounded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(size, generator=generator) < 0.3).long()
    # Raw distances far outside [0, 1]: a sigmoid would squash them into ties.
    scores = 40.0 + 5.0 * torch.randn(size, generator=generator) + 6.0 * labels
    if rounded:
        scores = torch.round(scores)
    return scores.float(), labels


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_mode_equals_sklearn(seed, rounded):
    scores, labels = scores_and_labels(seed, 3000, rounded)
    assert collect(AUROC(), scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_mode_is_within_1e_3_of_sklearn(seed):
    scores, labels = scores_and_labels(seed, 60_000)
    metric = AUROC(num_bins=NUM_BINS)
    assert collect(metric, scores, labels, chunk=4096) == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)
    assert sum(state.numel() for state in metric.metric_state.values()) == 3 * NUM_BINS + 4


def test_binned_ties_are_exact_when_each_bin_holds_one_value():
    scores, labels = scores_and_labels(4, 5000, rounded=True)
    assert collect(AUROC(num_bins=NUM_BINS), scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_hand_computed_value_and_perfect_ranking():
    # Positives 30 and 50 against negatives 20 and 40: 3 of 4 pairs ranked right.
    metric = AUROC()
    metric.update(torch.tensor([20.0, 30.0, 40.0, 50.0]), torch.tensor([0, 1, 0, 1]))
    assert float(metric.compute()) == 0.75
    for num_bins in (None, NUM_BINS):
        metric = AUROC(num_bins=num_bins)
        metric.update(torch.tensor([[1e6, 2e6], [-5.0, 3e6]]), torch.tensor([[0, 1], [0, 1]]))
        assert float(metric.compute()) == 1.0


@pytest.mark.parametrize("num_bins", [None, NUM_BINS])
def test_single_class_warns_and_returns_zero(num_bins):
    metric = AUROC(num_bins=num_bins)
    metric.update(torch.rand(10), torch.zeros(10))
    with pytest.warns(UserWarning, match="undefined"):
        assert float(metric.compute()) == 0.0


def test_bad_input_and_empty_metric():
    metric = AUROC(num_bins=NUM_BINS)
    with pytest.raises(ValueError, match="same number of elements"):
        metric.update(torch.rand(3), torch.zeros(4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metric.update(torch.rand(2), torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        metric.update(torch.tensor([float("nan"), 1.0]), torch.tensor([0, 1]))
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(RuntimeError, match="call update"):
        AUROC().compute()
