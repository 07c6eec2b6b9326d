"""Exported PatchCore, PaDiM and DFKDE models predict what the Lightning modules predict.

The torch program runs the native operators, ONNX Runtime standard operators only; both were
traced with a batch of 2 and run here with other batch sizes.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from support.lightning_noise import DDP_NOISE
from support.toy_defects import SIZE

from deploy_models import EXPORT_OPTIONS, MODELS, exported, fitted
from anomaly_kernels.deploy import EXPORT_FORMATS, Inferencer, export_model

# DDP_NOISE: Lightning's remarks on the setup and torch's deprecation notice raised in Lightning.
pytestmark = DDP_NOISE

NATIVE_OPERATORS = {
    "patchcore": {"anomaly_kernels.banded_resample2d.default"},
    "padim": {"anomaly_kernels.banded_resample2d.default", "anomaly_kernels.mahalanobis.default"},
    "dfkde": {"anomaly_kernels.kde_log_sum_exp.default"},
}
TOLERANCE = 1e-4


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_model_predicts_what_the_lightning_model_predicts(name, fmt):
    _, _, images, expected = fitted(name)
    inferencer = Inferencer(exported(name, fmt))
    assert (inferencer.model, inferencer.format, inferencer.input_size) == (name, fmt, (SIZE, SIZE))
    given = images.clone()
    predicted = inferencer.predict(images)  # a batch of 3; traced with 2
    assert torch.equal(images, given)
    maps = name != "dfkde"
    assert set(predicted) == {"pred_scores", "pred_labels"} | ({"anomaly_maps", "pred_masks"} if maps else set())
    torch.testing.assert_close(predicted["pred_scores"], expected["pred_scores"], rtol=0, atol=TOLERANCE)
    assert torch.equal(predicted["pred_labels"], expected["pred_labels"])
    if maps:
        assert predicted["anomaly_maps"].shape == (3, 1, SIZE, SIZE)
        torch.testing.assert_close(predicted["anomaly_maps"], expected["anomaly_maps"], rtol=0, atol=TOLERANCE)
        # A pixel within rounding of the threshold may fall on either side; no other may.
        differs = predicted["pred_masks"] != expected["pred_masks"]
        near = (expected["anomaly_maps"] - inferencer.thresholds["pixel"]).abs() <= TOLERANCE
        assert not bool((differs & ~near).any()) and int(differs.sum()) <= 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_test_images_get_both_labels(name):
    # Otherwise "identical labels" would also hold for a model that labels everything alike.
    expected = fitted(name).expected
    assert set(expected["pred_labels"].tolist()) == {False, True}
    if name != "dfkde":
        assert 0 < int(expected["pred_masks"].sum()) < expected["pred_masks"].numel()


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_any_batch_size_runs(fmt):
    images = fitted("padim").images
    inferencer = Inferencer(exported("padim", fmt))
    single = inferencer.predict(images[:1])
    assert single["anomaly_maps"].shape == (1, 1, SIZE, SIZE)
    torch.testing.assert_close(single["anomaly_maps"], inferencer.predict(images)["anomaly_maps"][:1])
    assert inferencer.predict(images.repeat(3, 1, 1, 1))["pred_labels"].shape == (9,)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_program_keeps_the_native_operators(name):
    program = torch.export.load(exported(name, "torch"))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert NATIVE_OPERATORS[name] <= targets


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_model_has_only_standard_operators_and_a_dynamic_batch(name):
    model = onnx.load(str(exported(name, "onnx")))
    onnx.checker.check_model(model)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert not [function.name for function in model.functions]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")
    assert [output.name for output in model.graph.output] == list(Inferencer(exported(name, "onnx")).outputs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_checkpoint_exports_like_its_module(tmp_path, name):
    # Trainer.save_checkpoint records no image size: DFKDE's export is told it.
    module, images, expected = fitted(name).module, fitted(name).images, fitted(name).expected
    checkpoint = tmp_path / "model.ckpt"
    module.trainer.save_checkpoint(checkpoint, weights_only=True)
    before = {key: value.clone() for key, value in module.state_dict().items()}
    path = export_model(checkpoint, "torch", tmp_path / "exported", **EXPORT_OPTIONS[name])
    assert path == tmp_path / "exported" / "model.pt2" and sorted(p.name for p in path.parent.iterdir()) == ["model.pt2"]
    predicted = Inferencer(path.parent).predict(images)
    torch.testing.assert_close(predicted["pred_scores"], expected["pred_scores"], rtol=0, atol=TOLERANCE)
    assert torch.equal(predicted["pred_labels"], expected["pred_labels"])
    # Exporting the module itself changes nothing in it.
    export_model(module, "torch", tmp_path / "from-module", **EXPORT_OPTIONS[name])
    after = module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
