"""create_metric_collection and ThresholdF1Score."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score

from anomaly_kernels.metrics import AUPRO, AUROC, METRIC_NAMES, ThresholdF1Score, create_metric_collection


def test_names_prefix_and_bins():
    collection = create_metric_collection(["F1Score", "AUROC", "AUPRO"], prefix="pixel_", num_bins=256)
    assert sorted(collection.keys(keep_base=False)) == ["pixel_AUPRO", "pixel_AUROC", "pixel_F1Score"]
    assert isinstance(collection["F1Score"], ThresholdF1Score)
    assert isinstance(collection["AUROC"], AUROC) and collection["AUROC"].num_bins == 256
    assert isinstance(collection["AUPRO"], AUPRO) and collection["AUPRO"].num_bins == 256
    assert create_metric_collection(["AUROC"], prefix="image_")["AUROC"].num_bins is None
    assert len(create_metric_collection([], prefix="image_")) == 0
    assert METRIC_NAMES == ("F1Score", "AUROC", "AUPRO")


def test_collection_computes_each_metric():
    collection = create_metric_collection(("F1Score", "AUROC"), prefix="image_")
    collection["F1Score"].threshold = 30.0
    scores, labels = torch.tensor([20.0, 30.0, 40.0, 50.0]), torch.tensor([0, 1, 0, 1])
    collection.update(scores, labels)
    values = collection.compute()
    assert float(values["image_AUROC"]) == 0.75
    assert float(values["image_F1Score"]) == pytest.approx(f1_score(labels, scores >= 30.0))


@pytest.mark.parametrize(
    ("names", "error", "message"),
    [
        (["AUROC", "f1score"], ValueError, r"unknown metric names \['f1score'\]; valid names are \['F1Score'"),
        (["AUROC", "AUROC"], ValueError, "must not repeat"),
        ("AUROC", TypeError, "list of metric names"),
        ([3], TypeError, "strings"),
    ],
)
def test_bad_names(names, error, message):
    with pytest.raises(error, match=message):
        create_metric_collection(names, prefix="image_")


def test_threshold_f1_uses_greater_or_equal_on_raw_scores_of_any_shape():
    metric = ThresholdF1Score(threshold=0.4)
    maps = torch.tensor([[[[0.4, 0.1], [0.9, 0.3]]]])
    masks = torch.tensor([[[1, 0], [0, 1]]])
    metric.update(maps, masks)
    assert float(metric.compute()) == pytest.approx(f1_score(masks.flatten(), maps.flatten() >= 0.4))
    with pytest.raises(ValueError, match="same number of elements"):
        metric.update(torch.rand(3), torch.zeros(2))
