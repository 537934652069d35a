"""The OpenVINO runtime computes the same features and votes as PyTorch, and never reports home."""

from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.device import cpu_supports_bf16
from classifier.ml.engine import EnsembleModel
from classifier.ml.features import extract_views, make_extractor
from classifier.ml.preprocess import batched_resized
from classifier.ml.registry import get_spec
from classifier.ml.runtime import OpenVINOExtractor, compile_extractor, openvino_available, resolve_runtime

REPO = Path(__file__).resolve().parents[2]
DEMO_CELLS = sorted((REPO / "demo" / "cells").rglob("*.jpg"))[::9]  # real PBC cells, every class

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino is in requirements.txt")
CPU = torch.device("cpu")


def test_runtime_is_resolved_in_one_place_and_never_switched_silently():
    assert resolve_runtime("auto", CPU) == "openvino"
    assert resolve_runtime("torch", CPU) == "torch"
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_runtime("openvino", torch.device("cuda"))
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("onnx", CPU)


def _features(ext, spec, size, paths, precision="fp32"):
    parts = [extract_views(ext, spec, batch[size], ["id", "rot90"], CPU, precision)
             for _, batch in batched_resized(paths, [size], 8)]
    return torch.cat(parts).numpy()


@pytest.mark.parametrize("name,weights,size", [
    ("efficientnet_lite0", "imagenet", 224),  # the real offline backbone, real cells
    ("resnet50", None, 96),  # a paper backbone (its ImageNet weights are not on this machine)
])
def test_openvino_features_equal_pytorch_features_on_real_cells(name, weights, size):
    assert len(DEMO_CELLS) >= 9
    spec = get_spec(name)
    ext, _ = make_extractor(name, "multistage", weights=weights, input_size=size)
    ov_ext = compile_extractor(ext, size, runtime="openvino", device=CPU, precision="fp32")
    assert isinstance(ov_ext, OpenVINOExtractor) and ov_ext.kind == "multistage"
    ref = _features(ext, spec, size, DEMO_CELLS)
    got = _features(ov_ext, spec, size, DEMO_CELLS)
    assert got.shape == ref.shape == (len(DEMO_CELLS), 2, spec.multistage_dim)
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 1e-4 * scale
    # the compiled graph takes any batch size (the last batch of a run is smaller)
    assert _features(ov_ext, spec, size, DEMO_CELLS[:3]).shape[0] == 3
    # the graph that normalises the uint8 images itself (what the engine runs) computes the same
    own = compile_extractor(ext, size, runtime="openvino", device=CPU, precision="fp32",
                            normalisation=(spec.mean, spec.std))
    assert own.takes_uint8
    assert np.abs(_features(own, spec, size, DEMO_CELLS) - ref).max() <= 1e-4 * scale
    with pytest.raises(TypeError, match="uint8"):
        own(torch.zeros(1, 3, size, size))


def test_engine_votes_are_the_same_in_both_runtimes(trained, dataset):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    paths = [it.path for it in dataset]
    a = EnsembleModel(ckpt, digest, device="cpu", precision="fp32", runtime="openvino")
    b = EnsembleModel(ckpt, digest, device="cpu", precision="fp32", runtime="torch")
    assert a.runtime == "openvino" and b.runtime == "torch"
    pa, pb = a.predict_proba(paths), b.predict_proba(paths)
    assert np.abs(pa.stacked - pb.stacked).max() < 1e-4
    assert [p.label for p in a.decide(pa)] == [p.label for p in b.decide(pb)]


def test_conversion_sends_no_usage_statistics(monkeypatch):
    """``openvino.convert_model`` reports usage to its vendor unless opted out; the runtime must
    not go through it, nor through the telemetry package."""
    import openvino
    import openvino_telemetry

    def refuse(*args, **kwargs):
        raise AssertionError("usage statistics would be sent")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    monkeypatch.setattr(openvino_telemetry.Telemetry, "send_event", refuse)
    monkeypatch.setattr(openvino_telemetry.Telemetry, "start_session", refuse)
    ext, _ = make_extractor("efficientnet_lite0", "pooled", weights=None, input_size=64)
    out = OpenVINOExtractor(ext, 64)(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, get_spec("efficientnet_lite0").feature_dim)


def test_bf16_only_where_measured_in_the_same_runtime(trained):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    # a tiny validation split is too small to measure: fp32
    assert ckpt["bf16_agreement"] is None
    assert EnsembleModel(ckpt, digest, device="cpu", runtime="openvino").precision == "fp32"
    measured = dict(ckpt, bf16_agreement=1.0, bf16_agreement_runtime="torch")
    assert EnsembleModel(measured, digest, device="cpu", runtime="openvino").precision == "fp32"
    low = dict(ckpt, bf16_agreement=0.99, bf16_agreement_runtime="openvino")
    assert EnsembleModel(low, digest, device="cpu", runtime="openvino").precision == "fp32"
    # checkpoints from before the re-check (and before the out-of-distribution score): plain bf16
    good = dict(ckpt, ood=None, bf16_agreement=0.999, bf16_agreement_runtime="openvino")
    want = "bf16" if cpu_supports_bf16() else "fp32"
    assert EnsembleModel(good, digest, device="cpu", runtime="openvino").precision == want
    # plain bf16 was never measured against the out-of-distribution score: fp32
    scored = dict(good, ood=ckpt["ood"])
    assert ckpt["ood"] is not None
    assert EnsembleModel(scored, digest, device="cpu", runtime="openvino").precision == "fp32"


def test_training_features_are_exact_fp32_with_openvino(trained):
    result, _, _ = trained
    assert result.config["feature_precision"] == "fp32"
    assert result.metrics["precision_check"]["runtime"] == "openvino"


@pytest.mark.skipif(not cpu_supports_bf16(), reason="needs a CPU with native bf16")
def test_precision_check_measures_bf16_votes_against_fp32(tmp_path):
    from .cells import CLASSES, TINY, make_images

    data = make_images(tmp_path / "cells", per_class=80)
    r = api.train(data, classes=CLASSES, ensemble=["efficientnet_lite0"], mode="default", epochs=3,
                  cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", device="cpu", weights=None,
                  config_overrides=dict(TINY, val_fraction=0.25))
    check = r.metrics["precision_check"]
    assert check["runtime"] == "openvino" and check["cells"] >= api.MIN_PRECISION_CHECK_CELLS
    assert 0.0 <= check["agreement"] <= 1.0
