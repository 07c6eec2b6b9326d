"""Tests of MVTecDataModule on a small synthetic MVTec-layout dataset, and a Lightning run over it."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from anomaly_kernels.components.base import AnomalyModule
from anomaly_kernels.data.datamodule import MVTecDataModule, stratified_split
from anomaly_kernels.data.folder import MVTecFolder, PredictFolder
from anomaly_kernels.data.synthetic import generate_synthetic_dataset

N_TRAIN, N_GOOD, N_PER_DEFECT = 6, 4, 2
DEFECTS = ("hole", "scratch")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(
        root,
        categories=["grid_like"],
        n_train=N_TRAIN,
        n_test_good=N_GOOD,
        n_test_defect_per_type=N_PER_DEFECT,
        image_size=32,
        defect_types=DEFECTS,
    )
    return root


def _paths(loader):
    return [path for batch in loader for path in batch["image_path"]]


def test_loaders_yield_module_batches(root):
    datamodule = MVTecDataModule(root, "grid_like", image_size=16, train_batch_size=4, eval_batch_size=3)
    datamodule.setup()
    train = list(datamodule.train_dataloader())
    assert [batch["image"].shape[0] for batch in train] == [4, 2]
    assert all(batch["label"].sum() == 0 for batch in train)
    assert all("/train/good/" in path for batch in train for path in batch["image_path"])
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (3, 1, 16, 16) and batch["label"].shape == (3,)
    labels = torch.cat([batch["label"] for batch in datamodule.test_dataloader()])
    assert labels.tolist() == [0] * N_GOOD + [1] * (N_PER_DEFECT * len(DEFECTS))


def test_same_as_test_validates_on_the_test_images(root):
    datamodule = MVTecDataModule(root, "grid_like", image_size=16, eval_batch_size=5)
    assert _paths(datamodule.val_dataloader()) == _paths(datamodule.test_dataloader())
    assert len(datamodule.val_data) == N_GOOD + N_PER_DEFECT * len(DEFECTS)


def test_from_test_splits_disjointly_per_label(root):
    datamodule = MVTecDataModule(root, "grid_like", image_size=16, val_split="from_test", val_split_ratio=0.5, seed=3)
    val_paths, test_paths = _paths(datamodule.val_dataloader()), _paths(datamodule.test_dataloader())
    full = MVTecFolder(root, "grid_like", "test", image_size=16)
    assert not set(val_paths) & set(test_paths)
    assert sorted(val_paths + test_paths) == sorted(str(sample.image_path) for sample in full.samples)
    val_labels = torch.cat([batch["label"] for batch in datamodule.val_dataloader()])
    assert (val_labels == 0).sum() == N_GOOD // 2 and (val_labels == 1).sum() == N_PER_DEFECT * len(DEFECTS) // 2
    again = MVTecDataModule(root, "grid_like", image_size=16, val_split="from_test", val_split_ratio=0.5, seed=3)
    assert _paths(again.val_dataloader()) == val_paths


def test_stratified_split_counts_and_refusals():
    labels = [0] * 10 + [1] * 3
    first, second = stratified_split(labels, 0.3, seed=0)
    assert sorted(first + second) == list(range(13))
    assert sum(labels[i] == 0 for i in first) == 3 and sum(labels[i] == 1 for i in first) == 1
    tiny_first, _ = stratified_split(labels, 0.01, seed=0)  # at least one of each label
    assert {labels[i] for i in tiny_first} == {0, 1}
    with pytest.raises(ValueError, match="label 1 has 1"):
        stratified_split([0, 0, 1], 0.5, seed=0)


def test_training_order_is_shuffled_reproducibly(root):
    def order(seed):
        datamodule = MVTecDataModule(root, "grid_like", image_size=8, train_batch_size=2, seed=seed)
        return _paths(datamodule.train_dataloader())

    first = order(0)
    assert first == order(0)
    assert sorted(first) == sorted(str(sample.image_path) for sample in MVTecFolder(root, "grid_like", "train").samples)
    assert any(order(seed) != first for seed in range(1, 4))


def test_predict_uses_the_test_set_or_a_folder(root):
    datamodule = MVTecDataModule(root, "grid_like", image_size=8)
    assert datamodule.predict_data is datamodule.test_data
    folder = root / "grid_like" / "test" / "hole"
    datamodule = MVTecDataModule(root, "grid_like", image_size=8, eval_batch_size=8, predict_path=folder)
    assert isinstance(datamodule.predict_data, PredictFolder)
    batch = next(iter(datamodule.predict_dataloader()))
    assert batch["image"].shape == (N_PER_DEFECT, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"train_batch_size": 0}, ValueError, "train_batch_size"),
        ({"eval_batch_size": 2.0}, TypeError, "eval_batch_size"),
        ({"num_workers": -1}, ValueError, "num_workers"),
        ({"val_split": "random"}, ValueError, "val_split"),
        ({"val_split_ratio": 1.0}, ValueError, "val_split_ratio"),
        ({"seed": -2}, ValueError, "seed"),
        ({"image_size": (8,)}, ValueError, "image_size"),
        ({"mean": None}, ValueError, "mean and std"),
    ],
)
def test_bad_arguments_are_rejected(root, kwargs, error, match):
    with pytest.raises(error, match=match):
        MVTecDataModule(root, "grid_like", **kwargs)


def test_setup_reports_a_missing_category(root):
    with pytest.raises(FileNotFoundError, match="carpet_like"):
        MVTecDataModule(root, "carpet_like").setup("fit")


class _DistanceToTrainMean(nn.Module):
    """Anomaly map: per-pixel distance to a fixed reference image (1, 3, H, W)."""

    def __init__(self, reference: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("reference", reference)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.reference).abs().mean(dim=1, keepdim=True)


class _MeanImageModule(AnomalyModule):
    def __init__(self, reference: torch.Tensor) -> None:
        super().__init__()
        self.model = _DistanceToTrainMean(reference)

    def validation_step(self, batch, batch_idx, *args, **kwargs):
        batch["anomaly_maps"] = self.model(batch["image"])
        return batch


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated")
def test_anomaly_module_validates_and_tests_on_the_datamodule(root):
    datamodule = MVTecDataModule(root, "grid_like", image_size=16, eval_batch_size=4, mean=None, std=None)
    reference = torch.stack([item["image"] for item in datamodule.train_data]).mean(dim=0, keepdim=True)
    module = _MeanImageModule(reference)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, datamodule=datamodule)
    outputs = module.validation_step_outputs
    assert sum(output["image"].shape[0] for output in outputs) == len(datamodule.val_data)
    assert all(output["anomaly_maps"].shape == output["mask"].shape for output in outputs)
    results = trainer.test(module, datamodule=datamodule)[0]
    assert {"image_AUROC", "pixel_AUROC"} <= set(results)
    predictions = trainer.predict(module, datamodule=datamodule)
    assert sum(len(batch["pred_labels"]) for batch in predictions) == len(datamodule.test_data)
