"""benchmarks/inference.py's bf16 calibration (the step that runs only on CPUs with native bf16,
forced here on any CPU through PyTorch's bf16 autocast): it measured pairs of (logits, features)
as if they were logits and failed with "setting an array element with a sequence ... inhomogeneous
shape" for every backbone."""
from benchmarks import inference
from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.engine import EnsembleModel
from tests.classifier_ml.cells import CLASSES, make_images


def test_bf16_calibration_measures_the_logits_and_the_ood_check(tmp_path, monkeypatch):
    items = make_images(tmp_path / "cells", per_class=8)
    result = api.train(items, classes=CLASSES, ensemble=["efficientnet_lite0"], epochs=2, cache_dir=tmp_path / "c",
                       out_dir=tmp_path / "m", device="cpu", weights=None, config_overrides={"input_size": 64})
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    assert ckpt["ood"] is not None
    fp32, bf16 = (EnsembleModel(ckpt, digest, device="cpu", precision=p, runtime="torch") for p in ("fp32", "bf16"))
    paths = [it.path for it in items]
    measured = inference.measure_bf16(fp32, bf16, paths, ["id"], ckpt["default_threshold"])
    assert measured["cells"] == len(paths)
    assert 0.0 <= measured["agreement"] <= 1.0
    recheck = measured["recheck"]
    assert len(recheck["logit_tolerance"]) == 1 and recheck["agreement"] is not None
    # the OOD check was measured too: without it the engine would never run the re-check for this checkpoint
    assert recheck["ood_tolerance"] is not None
    # and the engine accepts what was measured (on a CPU with native bf16 it then runs the re-check)
    calibrated = dict(ckpt, bf16_agreement=measured["agreement"], bf16_recheck=dict(recheck, agreement=1.0),
                      bf16_agreement_runtime="torch")
    monkeypatch.setattr("classifier.ml.engine.cpu_supports_bf16", lambda: True)
    model = EnsembleModel(calibrated, digest, device="cpu", precision="auto", runtime="torch")
    assert model.precision_label == "bf16 + fp32 re-check"
