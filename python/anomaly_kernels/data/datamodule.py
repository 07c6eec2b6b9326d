"""Lightning data module over one category of an MVTec-layout dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from anomaly_kernels.data.folder import MVTecFolder, PredictFolder
from anomaly_kernels.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSize,
    resolve_image_size,
    resolve_normalization,
)

VAL_SPLIT_MODES = ("same_as_test", "from_test")


def _check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def stratified_split(labels: Sequence[int], ratio: float, seed: int) -> Tuple[List[int], List[int]]:
    """Split item indices into two disjoint sorted lists, label by label.

    For each label, a seeded permutation of its items puts ``round(ratio * n)`` of them (at least
    one, and at least one left over) into the first list, the rest into the second.

    Args:
        labels: the label of every item.
        ratio: the fraction for the first list, in (0, 1).
        seed: seed of the permutation.

    Returns:
        ``(first, second)`` index lists.

    Raises:
        ValueError: a label has fewer than 2 items (it could not appear in both lists).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first: List[int] = []
    second: List[int] = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        if indices.size < 2:
            raise ValueError(
                f"splitting needs at least 2 items of every label to put some in each part, "
                f"label {int(label)} has {indices.size}"
            )
        indices = rng.permutation(indices)
        count = min(max(int(round(ratio * indices.size)), 1), indices.size - 1)
        first.extend(indices[:count].tolist())
        second.extend(indices[count:].tolist())
    return sorted(first), sorted(second)


class MVTecDataModule(pl.LightningDataModule):
    """Train, validation, test and predict data loaders of one category in the MVTec AD layout.

    Training uses ``train/good``; testing uses ``test`` (normal and anomalous images, with masks).
    Validation, which :class:`~anomaly_kernels.components.base.AnomalyModule` uses to fit its
    adaptive thresholds and min-max statistics, follows ``val_split``:

    * ``"same_as_test"`` (default, as anomalib 0.3.x without a validation set): validation and
      test are the same images. Thresholds are then tuned on the images the test metrics are
      reported on, so threshold-dependent test metrics (F1) are optimistic; AUROC is not affected.
    * ``"from_test"``: the test images are split, label by label, into a validation part
      (``val_split_ratio`` of each label, seeded by ``seed``) and a disjoint test part.

    Prediction reads ``predict_path`` (a folder of images or one image, via
    :class:`PredictFolder`) when given, the test set otherwise.

    Batches are dicts: ``image`` (B, 3, H, W) float32, and for train/val/test ``label`` (B,) int64,
    ``mask`` (B, 1, H, W) float32 in {0, 1}, ``image_path`` / ``mask_path`` / ``defect_type``
    lists of str (see :class:`MVTecFolder`). Training batches are shuffled with a generator seeded
    by ``seed``, so the order is reproducible.

    Several processes (a ``torch.distributed`` group of more than one process, e.g. Lightning's
    DDP strategies): each process reads its own contiguous block of every set
    (:class:`~anomaly_kernels.distributed.ContiguousDistributedSampler`), the training images in
    one seeded order shared by all processes, so every image is read exactly once and the
    one-pass models fit the same model as one process would. Give the Trainer
    ``use_distributed_sampler=False``: Lightning's own sampler repeats images to even out the
    blocks.

    Args:
        root: folder holding the category folders.
        category: category folder name.
        image_size: an int (square) or ``(H, W)``.
        train_batch_size: batch size of the training loader.
        eval_batch_size: batch size of the validation, test and predict loaders.
        num_workers: worker processes of every loader (0 loads in the main process).
        val_split: "same_as_test" or "from_test".
        val_split_ratio: fraction of each label of the test images used for validation with
            "from_test", in (0, 1).
        seed: seed of the validation split and of the training shuffle.
        mean, std: normalisation of the images (ImageNet by default; ``None`` for both: none).
        predict_path: images for :meth:`predict_dataloader`.
    """

    def __init__(
        self,
        root: Union[str, Path],
        category: str,
        image_size: ImageSize = 256,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        val_split: str = "same_as_test",
        val_split_ratio: float = 0.5,
        seed: int = 0,
        mean: Optional[Sequence[float]] = IMAGENET_MEAN,
        std: Optional[Sequence[float]] = IMAGENET_STD,
        predict_path: Optional[Union[str, Path]] = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.category = category
        self.image_size = resolve_image_size(image_size)
        self.train_batch_size = _check_positive_int(train_batch_size, "train_batch_size")
        self.eval_batch_size = _check_positive_int(eval_batch_size, "eval_batch_size")
        self.num_workers = _check_positive_int(num_workers, "num_workers", minimum=0)
        if val_split not in VAL_SPLIT_MODES:
            raise ValueError(f"val_split must be one of {VAL_SPLIT_MODES}, got {val_split!r}")
        self.val_split = val_split
        if not isinstance(val_split_ratio, (int, float)) or not 0.0 < float(val_split_ratio) < 1.0:
            raise ValueError(f"val_split_ratio must be a number in (0, 1), got {val_split_ratio!r}")
        self.val_split_ratio = float(val_split_ratio)
        self.seed = _check_positive_int(seed, "seed", minimum=0)
        self.mean, self.std = mean, std
        resolve_normalization(mean, std)
        self.predict_path = None if predict_path is None else Path(predict_path)

        self._train_data: Optional[MVTecFolder] = None
        self._full_test_data: Optional[MVTecFolder] = None
        self._val_data: Optional[Dataset] = None
        self._test_data: Optional[Dataset] = None
        self._predict_data: Optional[Dataset] = None

    # Datasets are built on first use and kept: setup() builds those a stage needs, so missing
    # folders are reported before the loop starts, and the loaders also work without setup().
    def _folder(self, split: str) -> MVTecFolder:
        return MVTecFolder(self.root, self.category, split, self.image_size, self.mean, self.std)

    @property
    def train_data(self) -> MVTecFolder:
        """The training set (``train/good``)."""
        if self._train_data is None:
            self._train_data = self._folder("train")
        return self._train_data

    @property
    def full_test_data(self) -> MVTecFolder:
        """Every image of ``test``, before any validation split."""
        if self._full_test_data is None:
            self._full_test_data = self._folder("test")
        return self._full_test_data

    def _split_test(self) -> None:
        if self.val_split == "same_as_test":
            self._val_data = self._test_data = self.full_test_data
        else:
            val_indices, test_indices = stratified_split(self.full_test_data.labels, self.val_split_ratio, self.seed)
            self._val_data = Subset(self.full_test_data, val_indices)
            self._test_data = Subset(self.full_test_data, test_indices)

    @property
    def val_data(self) -> Dataset:
        """The validation set (the test set itself, or its validation part; see the class doc)."""
        if self._val_data is None:
            self._split_test()
        return self._val_data

    @property
    def test_data(self) -> Dataset:
        """The test set (all test images, or the part not used for validation)."""
        if self._test_data is None:
            self._split_test()
        return self._test_data

    @property
    def predict_data(self) -> Dataset:
        """The images of ``predict_path``, or the test set when it is None."""
        if self._predict_data is None:
            if self.predict_path is None:
                self._predict_data = self.test_data
            else:
                self._predict_data = PredictFolder(self.predict_path, self.image_size, self.mean, self.std)
        return self._predict_data

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the datasets of ``stage`` ("fit", "validate", "test", "predict"; None: all)."""
        if stage in (None, "fit"):
            _ = self.train_data
        if stage in (None, "fit", "validate"):
            _ = self.val_data
        if stage in (None, "test"):
            _ = self.test_data
        if stage in (None, "predict"):
            _ = self.predict_data

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from anomaly_kernels.distributed import ContiguousDistributedSampler

            if shuffle:
                # One permutation, the same on every process, then each takes its own block.
                order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))
                dataset = Subset(dataset, order.tolist())
            return DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=ContiguousDistributedSampler(dataset),
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            generator=generator,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``train_batch_size`` normal training images."""
        return self._loader(self.train_data, self.train_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Batches of ``eval_batch_size`` validation images, in dataset order."""
        return self._loader(self.val_data, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of ``eval_batch_size`` test images, in dataset order."""
        return self._loader(self.test_data, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``eval_batch_size`` prediction images, in name order."""
        return self._loader(self.predict_data, self.eval_batch_size, shuffle=False)
