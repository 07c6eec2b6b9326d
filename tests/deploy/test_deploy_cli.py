"""``anomaly-kernels export``, and ``anomaly-kernels predict`` with the exported model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from support.lightning_noise import DDP_NOISE

from deploy_models import fitted
from anomaly_kernels.cli import main

pytestmark = DDP_NOISE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "padim.ckpt"
    fitted("padim").module.trainer.save_checkpoint(path, weights_only=True)
    return path


def test_export_then_predict_from_the_command_line(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "exp")]) == 0
    assert f"exported:   {tmp_path / 'exp' / 'model.onnx'}" in capsys.readouterr().out
    images = tmp_path / "images"
    images.mkdir()
    for index, image in enumerate(fitted("padim").images[:2]):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(images / f"{index}.png")
    code = main([
        "predict", "--checkpoint", str(tmp_path / "exp" / "model.onnx"), "--input", str(images),
        "--output", str(tmp_path / "pred"), "--batch-size", "1",
    ])
    assert code == 0 and "scored 2 images" in capsys.readouterr().out
    with open(tmp_path / "pred" / "scores.csv") as f:
        assert [row["image_path"] for row in csv.DictReader(f)] == [str(images / "0.png"), str(images / "1.png")]
    assert sorted(p.name for p in (tmp_path / "pred" / "masks").iterdir()) == ["0.png.png", "1.png.png"]


def test_export_errors_name_their_flag(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "none.ckpt"), "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --checkpoint: checkpoint not found")
    assert main(["export", "--checkpoint", str(checkpoint), "--image-size", "32", "--output", str(tmp_path)]) == 2
    assert "error: --checkpoint:" in capsys.readouterr().err  # the checkpoint records 64-pixel images
    (tmp_path / "model.pt2").write_bytes(b"earlier")
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --output:") and (tmp_path / "model.pt2").read_bytes() == b"earlier"
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(checkpoint), "--format", "tflite"])
