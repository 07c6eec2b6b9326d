"""Tests of MVTecFolder and PredictFolder on small hand-written MVTec-layout folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from anomaly_kernels.data.folder import MVTecFolder, PredictFolder
from anomaly_kernels.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _save_rgb(path: Path, colour, size=(12, 10)) -> np.ndarray:
    """A solid-colour image of ``size = (H, W)``; returns its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((*size, 3), dtype=np.uint8) + np.asarray(colour, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _save_mask(path: Path, box, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, dtype=np.uint8)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)


@pytest.fixture()
def dataset_root(tmp_path) -> Path:
    """Category "toy": 3 train, 2 good test, 2 "crack" and 1 "dent" test images with masks."""
    category = tmp_path / "toy"
    for index in range(3):
        _save_rgb(category / "train" / "good" / f"{index:03d}.png", (10 * index, 100, 200))
    for index in range(2):
        _save_rgb(category / "test" / "good" / f"{index:03d}.png", (50, 50, 50))
    for index in range(2):
        _save_rgb(category / "test" / "crack" / f"{index:03d}.png", (200, 0, 0))
        _save_mask(category / "ground_truth" / "crack" / f"{index:03d}_mask.png", (0, 0, 6, 5))
    _save_rgb(category / "test" / "dent" / "000.png", (0, 200, 0), size=(24, 20))  # another size
    _save_mask(category / "ground_truth" / "dent" / "000_mask.png", (12, 10, 24, 20), size=(24, 20))
    (category / "train" / "good" / "notes.txt").write_text("not an image")
    return tmp_path


def test_train_split_holds_only_good_images(dataset_root):
    data = MVTecFolder(dataset_root, "toy", "train", image_size=8)
    assert len(data) == 3
    assert data.labels == [0, 0, 0]
    assert [Path(sample.image_path).name for sample in data.samples] == ["000.png", "001.png", "002.png"]
    item = data[1]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 0
    assert item["mask"].shape == (1, 8, 8) and item["mask"].dtype == torch.float32
    assert item["mask"].sum() == 0
    assert item["mask_path"] == ""
    assert item["image_path"].endswith("train/good/001.png")
    expected = (np.array([10, 100, 200]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(item["image"].mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


def test_test_split_labels_masks_and_order(dataset_root):
    data = MVTecFolder(dataset_root, "toy", "test", image_size=(6, 5), mean=None, std=None)
    assert data.labels == [0, 0, 1, 1, 1]
    assert data.defect_types == ["crack", "dent"]
    assert [sample.defect_type for sample in data.samples] == ["good", "good", "crack", "crack", "dent"]
    crack = data[2]
    assert int(crack["label"]) == 1
    assert crack["mask_path"].endswith("ground_truth/crack/000_mask.png")
    # Reference: the stored mask resized by Pillow's nearest sampling, thresholded at 127.
    mask = crack["mask"][0].numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    reference = np.asarray(
        Image.open(dataset_root / "toy/ground_truth/crack/000_mask.png").resize((5, 6), Image.Resampling.NEAREST)
    )
    np.testing.assert_array_equal(mask, (reference > 127).astype(np.float32))
    np.testing.assert_allclose(crack["image"][:, 0, 0].numpy(), [200 / 255, 0, 0], atol=1e-6)
    dent = data[4]  # stored at 24x20, resized like the others
    assert dent["image"].shape == (3, 6, 5) and dent["mask"].shape == (1, 6, 5)
    assert dent["mask"][0, -1, -1] == 1 and dent["mask"][0, 0, 0] == 0


def test_batches_collate_to_module_shapes(dataset_root):
    data = MVTecFolder(dataset_root, "toy", "test", image_size=8)
    batch = next(iter(DataLoader(data, batch_size=5)))
    assert batch["image"].shape == (5, 3, 8, 8)
    assert batch["label"].shape == (5,) and batch["label"].dtype == torch.int64
    assert batch["mask"].shape == (5, 1, 8, 8)
    assert len(batch["image_path"]) == 5 and batch["mask_path"][0] == ""
    assert batch["label"].tolist() == [0, 0, 1, 1, 1]


def test_missing_folders_are_named(dataset_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MVTecFolder(tmp_path / "nowhere", "toy", "train")
    with pytest.raises(FileNotFoundError, match=r"bottle.*found \['toy'\]"):
        MVTecFolder(dataset_root, "bottle", "train")
    (dataset_root / "half").mkdir()
    with pytest.raises(FileNotFoundError, match=str(dataset_root / "half" / "test")):
        MVTecFolder(dataset_root, "half", "test")
    with pytest.raises(ValueError, match="split must be one of"):
        MVTecFolder(dataset_root, "toy", "val")


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "good" / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="no images"):
        MVTecFolder(tmp_path, "empty", "train")


def test_defect_image_without_mask_names_both_paths(dataset_root):
    image = dataset_root / "toy" / "test" / "crack" / "002.png"
    _save_rgb(image, (1, 2, 3))
    expected_mask = dataset_root / "toy" / "ground_truth" / "crack" / "002_mask.png"
    with pytest.raises(ValueError) as caught:
        MVTecFolder(dataset_root, "toy", "test")
    assert str(image) in str(caught.value) and str(expected_mask) in str(caught.value)


def test_unreadable_image_is_named_when_read(dataset_root):
    broken = dataset_root / "toy" / "train" / "good" / "003.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = MVTecFolder(dataset_root, "toy", "train", image_size=8)
    assert len(data) == 4
    with pytest.raises(ValueError, match="003.png"):
        data[3]


def test_mask_of_another_size_is_an_error(dataset_root):
    _save_mask(dataset_root / "toy" / "ground_truth" / "crack" / "001_mask.png", (0, 0, 2, 2), size=(5, 5))
    data = MVTecFolder(dataset_root, "toy", "test", image_size=8)
    with pytest.raises(ValueError, match="001_mask.png"):
        data[3]


def test_bad_arguments_are_rejected(dataset_root):
    with pytest.raises(ValueError, match="image_size"):
        MVTecFolder(dataset_root, "toy", "train", image_size=0)
    with pytest.raises(ValueError, match="std"):
        MVTecFolder(dataset_root, "toy", "train", image_size=8, std=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="category"):
        MVTecFolder(dataset_root, "", "train")
    data = MVTecFolder(dataset_root, "toy", "train", image_size=8)
    with pytest.raises(IndexError):
        data[3]


def test_predict_folder_reads_a_flat_folder_or_a_file(dataset_root, tmp_path):
    folder = dataset_root / "toy" / "test" / "crack"
    data = PredictFolder(folder, image_size=(4, 6))
    assert len(data) == 2
    item = data[0]
    assert set(item) == {"image", "image_path"}
    assert item["image"].shape == (3, 4, 6)
    assert item["image_path"].endswith("crack/000.png")
    single = PredictFolder(folder / "001.png", image_size=4)
    assert len(single) == 1
    with pytest.raises(FileNotFoundError, match="absent"):
        PredictFolder(tmp_path / "absent")
    (tmp_path / "blank").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        PredictFolder(tmp_path / "blank")
    (tmp_path / "blank" / "sub").mkdir()
    (tmp_path / "blank" / "x.png").write_text("text, not a PNG")
    with pytest.raises(ValueError, match=r"skipped 2 entries \(sub, x.png\)"):
        PredictFolder(tmp_path / "blank")
    with pytest.raises(ValueError, match="cannot read image file"):
        PredictFolder(tmp_path / "blank" / "x.png")
    with pytest.raises(ValueError, match="not an image file"):
        PredictFolder(dataset_root / "toy" / "train" / "good" / "notes.txt")
