"""Bad exports and bad exported files end with one clear error, before anything is written or run."""

from __future__ import annotations

import json
import zipfile

import onnx
import pytest
import torch

from support.lightning_noise import DDP_NOISE
from support.toy_defects import SIZE

from deploy_models import MODELS, exported, fitted
from anomaly_kernels.deploy import Inferencer, export_model
from anomaly_kernels.models import PatchCore

pytestmark = DDP_NOISE


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"format must be one of \['torch', 'onnx'\], got 'tflite'"):
        export_model(fitted("patchcore").module, format="tflite", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_unfitted_model_is_refused(name, tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint_or_module: the \w+ model is not fitted"):
        export_model(MODELS[name](), "onnx", tmp_path, image_size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_other_objects_and_sizes_are_refused(tmp_path):
    with pytest.raises(TypeError, match="checkpoint_or_module must be a checkpoint path or a PatchCore"):
        export_model(torch.nn.Linear(2, 2), "torch", tmp_path)
    with pytest.raises(ValueError, match=r"image_size: the model takes \(64, 64\) images, got \(32, 32\)"):
        export_model(fitted("patchcore").module, "torch", tmp_path, image_size=32)
    with pytest.raises(ValueError, match="image_size: a DFKDE model takes images of any size"):
        export_model(fitted("dfkde").module, "torch", tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_model(tmp_path / "missing.ckpt", "torch", tmp_path)


def test_a_normalisation_without_statistics_is_refused(tmp_path):
    # Fitted, but never validated: min-max has no range to normalise with.
    torch.manual_seed(0)
    module = PatchCore(backbone="resnet18", layers=("layer1",), pre_trained=False, input_size=(32, 32), normalization="min_max")
    module.model.subsample_embedding(module.model.embed(torch.rand(2, 3, 32, 32)), 0.5)
    with pytest.raises(ValueError, match="normalization='min_max' needs the statistics of a validation epoch"):
        export_model(module, "torch", tmp_path)


def test_an_earlier_export_is_kept_unless_overwrite(tmp_path):
    source = exported("dfkde", "torch")
    (tmp_path / "model.pt2").write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match="holds the outputs of an earlier run \\(model.pt2\\); pass overwrite"):
        export_model(fitted("dfkde").module, "torch", tmp_path, image_size=SIZE)
    assert (tmp_path / "model.pt2").read_bytes() == source.read_bytes()


def test_an_export_replaces_the_earlier_one_with_overwrite(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"old")
    (tmp_path / "model.onnx.data").write_bytes(b"old weights")  # an earlier, larger export's weights
    path = export_model(fitted("dfkde").module, "onnx", tmp_path, image_size=SIZE, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no scratch folder left
    assert Inferencer(path).predict(fitted("dfkde").images)["pred_scores"].shape == (3,)


def test_inferencer_refuses_what_is_not_an_exported_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="exported model not found"):
        Inferencer(tmp_path / "model.pt2")
    (tmp_path / "model.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is not an exported model: expected a .pt2 or .onnx file, got '.ckpt'"):
        Inferencer(tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="holds no exported model; name the model file"):
        Inferencer(tmp_path)
    (tmp_path / "model.pt2").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a torch.export archive"):
        Inferencer(tmp_path / "model.pt2")
    (tmp_path / "model.onnx").write_bytes(exported("dfkde", "onnx").read_bytes())
    with pytest.raises(ValueError, match=r"holds several exported models \(model.pt2, model.onnx\)"):
        Inferencer(tmp_path)


def test_inferencer_checks_the_images():
    inferencer = Inferencer(exported("padim", "onnx"))
    with pytest.raises(ValueError, match=r"images must have the model's input_size \(64, 64\), got spatial size \(32, 32\)"):
        inferencer.predict(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        inferencer.predict(torch.rand(3, SIZE, SIZE))
    for fmt in ("torch", "onnx"):
        corrupted = fitted("padim").images.clone()
        corrupted[1, 0, 5, 5] = float("nan")
        with pytest.raises(ValueError, match="images must be finite: image 1 of the batch of 3 holds NaN"):
            Inferencer(exported("padim", fmt)).predict(corrupted)
        with pytest.raises(ValueError, match="images give non-finite scores: image 0 of the batch of 1"):
            Inferencer(exported("padim", fmt)).predict(torch.full((1, 3, SIZE, SIZE), 1e30))
    with pytest.raises(ValueError, match="device: ONNX models run on the CPU here"):
        Inferencer(exported("padim", "onnx"), device="cuda")


def test_an_archive_with_pickled_weights_is_refused_unread(tmp_path):
    # Rewrite the weights index to claim pickled payloads: torch.export.load would unpickle them.
    source, target = exported("dfkde", "torch"), tmp_path / "model.pt2"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            copy.writestr(item, data)
    with pytest.raises(ValueError, match="as a pickled object; refused, because loading it could run code"):
        Inferencer(target)


def test_an_onnx_model_from_elsewhere_is_refused(tmp_path):
    model = onnx.load(str(exported("dfkde", "onnx")))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(ValueError, match="was not written by anomaly_kernels.deploy.export_model"):
        Inferencer(tmp_path / "model.onnx")
