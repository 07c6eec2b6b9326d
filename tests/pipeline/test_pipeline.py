"""The fit / predict pipeline behind the command line, on a small synthetic set."""

import csv

import pytest
import timm
import torch
from PIL import Image

from anomaly_kernels.cli import main
from anomaly_kernels.pipeline import fit_and_test, predict_folder
from anomaly_kernels.pipeline.backbone_weights import resolve_pretrained
from anomaly_kernels.pipeline.heatmaps import colorize

SIZE = 64


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    result = fit_and_test(
        model="padim", output_dir=output, image_size=SIZE, backbone="resnet18", pretrained="none",
        progress=False, model_options={"layers": ("layer1", "layer2"), "n_features": 50},
    )
    return result, output


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_reports_metrics_stages_and_writes_files(fitted):
    result, output = fitted
    assert {"image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"} <= set(result.metrics)
    assert all(0.0 <= value <= 1.0 for value in result.metrics.values())
    assert set(result.stages) == {"feature extraction", "fit", "scoring"}
    assert all(seconds > 0 for seconds in result.stages.values())
    test_images = sorted((output / "synthetic" / "carpet_like" / "test").glob("*/*.png"))
    assert result.images["test"] == len(test_images) and result.images["train"] == 32
    rows = _rows(result.scores_csv)
    assert sorted(r["image_path"] for r in rows) == sorted(str(p) for p in test_images)
    assert {r["label"] for r in rows} == {"0", "1"}
    heatmaps = sorted(result.heatmaps.rglob("*.png"))
    assert len(heatmaps) == len(test_images)
    with Image.open(heatmaps[0]) as image:
        assert image.width > 5 * SIZE and image.height > SIZE and image.mode == "RGB"  # a five-tile panel
    assert result.checkpoint.is_file()
    assert "RANDOM initialisation" in result.weights_note


def test_predict_from_the_checkpoint_gives_the_same_scores(fitted, tmp_path):
    result, output = fitted
    folder = output / "synthetic" / "carpet_like" / "test" / "hole"
    summary = predict_folder(result.checkpoint, folder, tmp_path, progress=False)
    assert summary["images"] == len(list(folder.glob("*.png")))
    predicted = {r["image_path"]: float(r["pred_score"]) for r in _rows(summary["scores_csv"])}
    from_fit = {r["image_path"]: float(r["pred_score"]) for r in _rows(result.scores_csv)}
    for path, score in predicted.items():
        assert score == pytest.approx(from_fit[path], abs=1e-5)
    assert len(list(summary["heatmaps"].glob("*.png"))) == summary["images"]


def test_command_line_fit_prints_metrics_and_stage_times(tmp_path, capsys):
    code = main([
        "fit", "--model", "dfkde", "--backbone", "resnet18", "--image-size", str(SIZE), "--pretrained", "none",
        "--output", str(tmp_path), "--no-progress",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert "image_AUROC" in printed and "feature extraction" in printed and "ms/image" in printed
    assert (tmp_path / "model.ckpt").is_file() and (tmp_path / "scores.csv").is_file()
    assert not (tmp_path / "heatmaps").exists()  # DFKDE scores images only


def test_local_weights_file_is_loaded(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    from anomaly_kernels.pipeline.backbone_weights import load_backbone_weights
    from anomaly_kernels.pipeline.fit import build_model

    pre_trained, note = resolve_pretrained("resnet18", "auto", str(path))
    assert pre_trained is False and str(path) in note
    module = build_model("padim", (SIZE, SIZE), pre_trained, "resnet18", layers=("layer1",), n_features=10)
    load_backbone_weights(module.model.feature_extractor.feature_extractor, str(path))
    assert torch.equal(module.model.feature_extractor.feature_extractor.conv1.weight, reference.conv1.weight)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        resolve_pretrained("resnet18", "auto", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="pretrained must be one of"):
        resolve_pretrained("resnet18", "sometimes", None)
    with pytest.raises(ValueError, match="category is required"):
        fit_and_test(model="padim", output_dir=tmp_path, data_root=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        predict_folder(tmp_path / "none.ckpt", tmp_path, tmp_path)
    with pytest.raises(ValueError, match="model must be one of"):
        fit_and_test(model="stfpm", output_dir=tmp_path, progress=False)


def test_colour_ramp_is_monotone_in_warmth():
    colours = colorize(torch.linspace(0, 1, 50).numpy()[None, :])[0].astype(int)
    assert colours.shape == (50, 3)
    assert colours[0].tolist() == [0, 0, 96] and colours[-1].tolist() == [200, 0, 0]
    assert (colours[-1, 0] - colours[-1, 2]) > (colours[0, 0] - colours[0, 2])  # red end warmer than blue end


def test_command_line_reports_bad_paths_without_a_traceback(tmp_path, capsys):
    code = main(["fit", "--model", "padim", "--data", str(tmp_path / "missing"), "--category", "x",
                 "--output", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "error: --data: dataset root not found" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "none.ckpt"), "--input", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
