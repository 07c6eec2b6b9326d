"""Predicting a folder of images from an exported model gives the checkpoint's scores and files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from support.lightning_noise import DDP_NOISE
from support.toy_defects import SIZE

from deploy_models import exported, fitted
from anomaly_kernels.deploy import EXPORT_FORMATS
from anomaly_kernels.deploy.predict import predict_folder

pytestmark = DDP_NOISE


def _rows(path):
    with open(path) as f:
        return {row["image_path"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def images_and_checkpoint(tmp_path_factory):
    """A folder of the PaDiM test images as PNGs, and the fitted module's checkpoint."""
    folder = tmp_path_factory.mktemp("images")
    for index, image in enumerate(fitted("padim").images):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    checkpoint = folder.parent / "padim.ckpt"
    fitted("padim").module.trainer.save_checkpoint(checkpoint, weights_only=True)
    return folder, checkpoint


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_an_exported_model_predicts_a_folder_like_its_checkpoint(images_and_checkpoint, tmp_path, fmt):
    folder, checkpoint = images_and_checkpoint
    from_checkpoint = predict_folder(checkpoint, folder, tmp_path / "checkpoint", image_size=SIZE, progress=False)
    from_export = predict_folder(exported("padim", fmt), folder, tmp_path / fmt, batch_size=2)
    assert from_export["images"] == from_checkpoint["images"] == 3
    expected, predicted = _rows(from_checkpoint["scores_csv"]), _rows(from_export["scores_csv"])
    assert predicted.keys() == expected.keys()
    for path, row in predicted.items():
        assert float(row["pred_score"]) == pytest.approx(float(expected[path]["pred_score"]), abs=1e-4)
        assert row["pred_label"] == expected[path]["pred_label"]
    for kind in ("heatmaps", "masks"):
        names = sorted(p.name for p in (tmp_path / fmt / kind).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "checkpoint" / kind).iterdir()) == [
            "000.png.png", "001.png.png", "002.png.png"
        ]


def test_an_exported_model_refuses_another_image_size(images_and_checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"takes \(64, 64\) images; image size 32 disagrees") as error:
        predict_folder(exported("padim", "torch"), images_and_checkpoint[0], tmp_path, image_size=32)
    assert error.value.parameter == "image_size"
    assert not (tmp_path / "scores.csv").exists()
