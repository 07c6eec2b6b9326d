"""What fit and predict leave behind and say: no lost or stale output, every model option, checked checkpoints.

One small PaDiM fit (32 px, one layer, 8 features) is shared; the tests that need their own run
say why.
"""

import datetime
import shutil
import warnings

import pytest
import torch
from PIL import Image

from anomaly_kernels.cli import main
from anomaly_kernels.data import PredictFolder, read_synthetic_settings
from anomaly_kernels.pipeline import fit_and_test, predict_folder
from anomaly_kernels.pipeline.checkpoint import CHECKPOINT_KEY, checkpoint_metadata, load_model
from anomaly_kernels.pipeline.fit import make_trainer
from anomaly_kernels.pipeline.quiet import EXPECTED_REMARKS, StderrProgressBar

SIZE = 32
OPTIONS = {"layers": ("layer1",), "n_features": 8}
FIT = dict(model="padim", image_size=SIZE, backbone="resnet18", pretrained="none", progress=False)
CLI_FIT = ["fit", "--model", "padim", "--backbone", "resnet18", "--image-size", str(SIZE), "--pretrained", "none",
           "--layers", "layer1", "--n-features", "8"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    result = fit_and_test(output_dir=output, model_options=dict(OPTIONS), **FIT)
    return result, output


def _scores(path):
    import csv

    with open(path) as f:
        return {row["image_path"]: float(row["pred_score"]) for row in csv.DictReader(f)}


# --- nothing lost, nothing stale -------------------------------------------------------------


def test_predict_keeps_every_image_and_names_what_it_skipped(fitted, tmp_path, capsys):
    result, output = fitted
    source = sorted((output / "synthetic" / "carpet_like" / "test" / "hole").glob("*.png"))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(source[0], images / "a.png")
    with Image.open(source[1]) as image:
        image.save(images / "a.jpg")
        image.save(images / "b.webp")
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(b"not a png")
    (images / "nested").mkdir()
    code = main(["predict", "--checkpoint", str(result.checkpoint), "--input", str(images),
                 "--output", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    overlays = sorted(p.name for p in (tmp_path / "out" / "heatmaps").iterdir())
    assert overlays == ["a.jpg.png", "a.png.png", "b.webp.png"]  # a.png and a.jpg no longer collide
    assert len(_scores(tmp_path / "out" / "scores.csv")) == 3
    assert "skipped 3 entries" in captured.err
    for name, reason in (("broken.png", "unreadable"), ("nested", "a folder"), ("notes.txt", "not an image type")):
        assert any(line.strip().startswith(f"{name}: {reason}") for line in captured.err.splitlines()), captured.err


def test_a_second_fit_refuses_to_leave_old_outputs_then_replaces_them(fitted, tmp_path, capfd):
    """A second fit with another seed and size: refused without --overwrite, then a fresh set and outputs."""
    result, first = fitted
    output = tmp_path / "run"
    shutil.copytree(first, output)
    stale = output / "heatmaps" / "stale.png"
    stale.write_bytes(b"from an older run")
    checkpoint_before = (output / "model.ckpt").read_bytes()

    assert main(CLI_FIT + ["--output", str(output), "--seed", "1", "--no-progress"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: --output:") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (output / "model.ckpt").read_bytes() == checkpoint_before  # refused before touching anything

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([arg if arg != str(SIZE) else "40" for arg in CLI_FIT]
                    + ["--output", str(output), "--seed", "1", "--overwrite"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "set regenerated" in out and "seed 0" in out and "seed 1" in out
    assert read_synthetic_settings(output / "synthetic" / "carpet_like")["seed"] == 1
    with Image.open(next((output / "synthetic" / "carpet_like" / "train" / "good").iterdir())) as image:
        assert image.size == (40, 40)
    assert "removed the earlier run's model.ckpt, scores.csv, heatmaps/" in err
    assert not stale.exists()
    overlays = sorted(p.relative_to(output / "heatmaps").as_posix() for p in (output / "heatmaps").rglob("*.png"))
    tests = sorted(p.relative_to(output / "synthetic" / "carpet_like" / "test").as_posix() + ".png"
                   for p in (output / "synthetic" / "carpet_like" / "test").rglob("*.png"))
    assert overlays == tests
    # Quiet: none of Lightning's remarks about the intended setup, its info lines or a bar.
    import re

    assert not [w for w in caught if any(re.match(p, str(w.message)) for p in EXPECTED_REMARKS)]
    for noise in ("GPU available", "Tip", "Trainer.fit` stopped", "it/s]"):
        assert noise not in out and noise not in err


def test_a_second_fit_with_the_same_settings_reuses_the_set(fitted, tmp_path):
    from anomaly_kernels.pipeline.fit import _synthetic_set

    result, output = fitted
    root = output / "synthetic"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert "reused" in _synthetic_set(root, "carpet_like", SIZE, 0)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == before


def test_metrics_without_an_anomalous_test_image_are_undefined(fitted, tmp_path, capsys):
    result, output = fitted
    source = output / "synthetic" / "carpet_like"
    data = tmp_path / "data" / "plain"
    shutil.copytree(source / "train", data / "train")
    shutil.copytree(source / "test" / "good", data / "test" / "good")
    code = main(CLI_FIT + ["--data", str(tmp_path / "data"), "--category", "plain", "--output", str(tmp_path / "o"),
                           "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "image_AUROC      n/a" in captured.out and "0.0000" not in captured.out
    assert "warning: the test set has no anomalous image" in captured.err
    assert "AUROC is undefined" not in captured.err  # said once, not once per metric


def test_progress_bars_go_to_stderr(fitted, tmp_path, capsys):
    result, output = fitted
    predict_folder(result.checkpoint, output / "synthetic" / "carpet_like" / "test" / "hole", tmp_path, progress=True)
    captured = capsys.readouterr()
    assert "Predicting" in captured.err and "Predicting" not in captured.out
    trainer = make_trainer("cpu", None, [])  # stderr is not a terminal under pytest: no bar
    assert not any(isinstance(callback, StderrProgressBar) for callback in trainer.callbacks)


# --- every model option ----------------------------------------------------------------------


def test_every_model_option_reaches_the_model(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("anomaly_kernels.pipeline.fit_and_test", lambda **kwargs: seen.update(kwargs) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["fit", "--model", "patchcore", "--layers", "layer1", "layer2", "--coreset-ratio", "0.25",
              "--num-neighbors", "3", "--val-split", "from_test", "--val-ratio", "0.3", "--devices", "2",
              "--ddp-timeout", "90", "--output", str(tmp_path)])
    assert seen["model_options"] == {"layers": ["layer1", "layer2"], "coreset_sampling_ratio": 0.25, "num_neighbors": 3}
    assert (seen["val_split"], seen["val_split_ratio"], seen["devices"], seen["strategy"], seen["ddp_timeout"]) == (
        "from_test", 0.3, 2, "ddp_spawn", 90.0)
    from anomaly_kernels.pipeline.fit import build_model

    module = build_model("patchcore", (SIZE, SIZE), False, "resnet18", layers=["layer1"], num_neighbors=3,
                         coreset_sampling_ratio=0.25)
    assert module.model.num_neighbors == 3 and module.coreset_sampling_ratio == 0.25 and module.model.layers == ["layer1"]


@pytest.mark.parametrize("args, flag, says", [
    (["--model", "padim", "--backbone", "resnet34"], "--n-features", "resnet34"),
    (["--model", "patchcore", "--n-features", "4"], "--n-features", "padim"),
    (["--model", "padim", "--backbone", "resnet18", "--layers", "layer9"], "--layers", "layer9"),
    (["--model", "patchcore", "--coreset-ratio", "1.5"], "--coreset-ratio", "(0, 1]"),
    (["--val-ratio", "1"], "--val-ratio", "(0, 1)"),
    (["--ddp-timeout", "0"], "--ddp-timeout", "positive"),
])
def test_model_option_errors_name_their_flag(tmp_path, capsys, monkeypatch, args, flag, says):
    monkeypatch.setattr("anomaly_kernels.pipeline.fit.make_trainer", lambda *a, **k: 1 / 0)
    try:
        code = main(["fit", "--pretrained", "none", "--output", str(tmp_path)] + args)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {flag}") or f"argument {flag}" in err, err
    assert says in err and len(err.strip().splitlines()) == 1


def test_the_ddp_timeout_reaches_the_process_group():
    trainer = make_trainer("cpu", False, [], devices=2, ddp_timeout=75)
    assert trainer.strategy._timeout == datetime.timedelta(seconds=75)
    assert make_trainer("cpu", False, []).world_size == 1


def test_training_on_two_processes_gives_the_one_process_model(fitted, tmp_path, capfd):
    result, output = fitted
    code = main(CLI_FIT + ["--output", str(tmp_path), "--devices", "2", "--ddp-timeout", "120", "--no-progress"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "training (2 processes)" in out and "Initializing distributed" not in out + err
    one = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "model.ckpt", weights_only=True)["state_dict"]
    for key in ("model.gaussian.mean", "model.gaussian.inv_covariance"):
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-4)


# --- checkpoints -----------------------------------------------------------------------------


def test_predict_accepts_a_checkpoint_of_trainer_save_checkpoint(fitted, tmp_path):
    result, output = fitted
    module, _ = load_model(result.checkpoint)
    trainer = make_trainer("cpu", False, [])
    folder = output / "synthetic" / "carpet_like" / "test" / "stain"
    trainer.predict(module, dataloaders=torch.utils.data.DataLoader(PredictFolder(folder, SIZE)))  # attaches it
    plain = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(plain)
    assert CHECKPOINT_KEY not in torch.load(plain, weights_only=True)
    summary = predict_folder(plain, folder, tmp_path / "out", progress=False)
    from_fit = _scores(result.scores_csv)
    for path, score in _scores(summary["scores_csv"]).items():
        assert score == pytest.approx(from_fit[path], abs=1e-5)


def test_a_checkpoint_without_an_image_size_needs_one(tmp_path):
    checkpoint = {"state_dict": {"model.kde_model.dataset": torch.zeros(2, 2)}, "hyper_parameters": {}}
    with pytest.raises(ValueError, match="--image-size"):
        checkpoint_metadata(checkpoint, tmp_path / "x.ckpt")
    assert checkpoint_metadata(checkpoint, tmp_path / "x.ckpt", image_size=64) == {"model": "dfkde", "image_size": 64}
    with pytest.raises(ValueError, match="of no model"):
        checkpoint_metadata({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "x.ckpt", image_size=64)


def test_one_flipped_byte_in_the_inverse_covariance_is_detected(fitted, tmp_path, capsys):
    result, output = fitted
    checkpoint = torch.load(result.checkpoint, weights_only=True)
    precision = checkpoint["state_dict"]["model.gaussian.inv_covariance"]
    precision.reshape(-1).view(torch.uint8)[12345] ^= 0x01  # one bit of one byte
    damaged = tmp_path / "damaged.ckpt"
    torch.save(checkpoint, damaged)
    code = main(["predict", "--checkpoint", str(damaged), "--input", str(output / "synthetic"),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --checkpoint:") and "corrupted" in err
    assert not (tmp_path / "out").exists()
