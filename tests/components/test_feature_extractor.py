"""Tests of FeatureExtractor: layer mapping, shapes, channel counts, input checks (offline, random weights)."""

from __future__ import annotations

import pytest
import timm
import torch

from anomaly_kernels.components.feature_extractors import FeatureExtractor


@pytest.fixture(scope="module")
def resnet18_extractor() -> FeatureExtractor:
    return FeatureExtractor("resnet18", ["layer1", "layer2", "layer3"], pre_trained=False).eval()


@pytest.fixture(scope="module")
def wide_resnet_extractor() -> FeatureExtractor:
    # Building wide_resnet50_2 takes seconds: once per module.
    return FeatureExtractor("wide_resnet50_2", ["layer1", "layer2", "layer3"], pre_trained=False).eval()


def test_resnet18_shapes_at_256(resnet18_extractor):
    with torch.no_grad():
        features = resnet18_extractor(torch.rand(2, 3, 256, 256))
    assert list(features) == ["layer1", "layer2", "layer3"]
    assert [tuple(f.shape) for f in features.values()] == [(2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16)]
    assert resnet18_extractor.out_dims == [64, 128, 256]
    assert resnet18_extractor.idx == [1, 2, 3]


def test_features_equal_the_backbone_stages(resnet18_extractor):
    # Independent reference: run the stages of the timm backbone by hand.
    body = resnet18_extractor.feature_extractor
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = resnet18_extractor(images)
        x = body.maxpool(body.act1(body.bn1(body.conv1(images))))
        expected = {}
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(body, name)(x)
            expected[name] = x
    for name in expected:
        torch.testing.assert_close(features[name], expected[name])


def test_wide_resnet50_2_dims_and_shapes(wide_resnet_extractor):
    assert wide_resnet_extractor.out_dims == [256, 512, 1024]
    with torch.no_grad():
        features = wide_resnet_extractor(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features.values()] == [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4)]


def test_output_follows_the_order_of_layers():
    extractor = FeatureExtractor("resnet18", ["layer3", "layer1"], pre_trained=False).eval()
    with torch.no_grad():
        features = extractor(torch.rand(1, 3, 64, 64))
    assert list(features) == ["layer3", "layer1"]
    assert tuple(features["layer3"].shape) == (1, 256, 4, 4)
    assert tuple(features["layer1"].shape) == (1, 64, 16, 16)
    assert extractor.out_dims == [256, 64]
    assert extractor.idx == [3, 1]


def test_generic_mapping_for_a_non_resnet_backbone():
    # efficientnet's feature modules are blocks.*, not layerN: nothing resnet-specific may be assumed.
    names = [entry["module"] for entry in timm.create_model("efficientnet_b0", features_only=True).feature_info.info]
    extractor = FeatureExtractor("efficientnet_b0", [names[2], names[3]], pre_trained=False).eval()
    assert extractor.idx == [2, 3]
    with torch.no_grad():
        features = extractor(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in features.values()] == extractor.out_dims == [40, 112]


def test_unknown_layer_warns_is_dropped_and_callers_list_is_kept():
    layers = ["layer1", "layer9", "layer2"]
    with pytest.warns(UserWarning, match=r"layer9.*available layers.*layer1"):
        extractor = FeatureExtractor("resnet18", layers, pre_trained=False)
    assert layers == ["layer1", "layer9", "layer2"]
    assert extractor.layers == ["layer1", "layer2"]
    assert extractor.out_dims == [64, 128]
    with torch.no_grad():
        assert list(extractor(torch.rand(1, 3, 32, 32))) == ["layer1", "layer2"]


def test_no_valid_layer_is_a_value_error():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="at least one feature layer"):
        FeatureExtractor("resnet18", ["conv9", "block7"], pre_trained=False)


@pytest.mark.parametrize(
    "backbone, layers, error, match",
    [
        ("resnet18", "layer1", TypeError, "list of layer names"),
        ("resnet18", ["layer1", 2], TypeError, "only strings"),
        ("resnet18", ["layer1", "layer1"], ValueError, "repeat"),
        ("no_such_net", ["layer1"], ValueError, "unknown model 'no_such_net'"),
        (18, ["layer1"], TypeError, "backbone"),
    ],
)
def test_bad_arguments(backbone, layers, error, match):
    with pytest.raises(error, match=match):
        FeatureExtractor(backbone, layers, pre_trained=False)


@pytest.mark.parametrize(
    "tensor, error, match",
    [
        (torch.rand(3, 32, 32), ValueError, r"\(B, 3, H, W\).*\(3, 32, 32\)"),
        (torch.rand(1, 1, 32, 32), ValueError, r"\(1, 1, 32, 32\)"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), TypeError, "floating-point"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input(resnet18_extractor, tensor, error, match):
    with pytest.raises(error, match=match):
        resnet18_extractor(tensor)


def test_input_is_not_modified(resnet18_extractor):
    images = torch.rand(1, 3, 32, 32)
    before = images.clone()
    with torch.no_grad():
        resnet18_extractor(images)
    torch.testing.assert_close(images, before, rtol=0, atol=0)


def test_pretrained_load_failure_is_a_clear_runtime_error(monkeypatch):
    create_model = timm.create_model

    def offline_create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return create_model(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create_model)
    with pytest.raises(RuntimeError, match="pre_trained=False") as info:
        FeatureExtractor("resnet18", ["layer1"], pre_trained=True)
    assert isinstance(info.value.__cause__, OSError)


def test_state_dict_round_trip_into_a_fresh_extractor(resnet18_extractor):
    fresh = FeatureExtractor("resnet18", ["layer1", "layer2", "layer3"], pre_trained=False).eval()
    fresh.load_state_dict(resnet18_extractor.state_dict())
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected, got = resnet18_extractor(images), fresh(images)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
