import numpy as np
import pytest
import torch
from PIL import Image

from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint, sha256_file
from classifier.ml.engine import clear_cache

from .cells import CLASSES, TINY, make_images


def test_training_reports_progress_and_metrics(trained):
    result, events, _ = trained
    stages = [e["stage"] for e in events]
    assert stages[0] == "featurising" and stages[-1] == "done"
    epochs = [e for e in events if e["stage"] == "training"]
    assert epochs and {"backbone", "epoch", "epochs", "loss", "val_accuracy"} <= set(epochs[0])
    assert result.classes == CLASSES and len(result.backbones) == 3
    assert result.metrics["n_val"] > 0 and 0.0 <= result.metrics["val_accuracy_majority"] <= 1.0
    assert len(result.history) == len(epochs)


def test_checkpoint_round_trip_with_weights_only_and_sha256(trained):
    result, _, _ = trained
    assert result.checkpoint_sha256 == sha256_file(result.checkpoint_path)
    assert result.checkpoint_sha256[:16] in result.checkpoint_path.name
    raw = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    assert digest == result.checkpoint_sha256
    assert raw["classes"] == ckpt["classes"] == CLASSES
    assert set(ckpt["heads"]) == set(result.backbones)
    assert {"torch", "torchvision"} <= set(ckpt["versions"])
    assert all(t > 0 for t in ckpt["temperature"].values())
    assert not list(result.checkpoint_path.parent.glob("*.tmp"))


def test_predict_returns_votes_probabilities_and_agreement(trained, dataset):
    result, _, _ = trained
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    paths = [it.path for it in dataset[::5]]
    preds = model.predict(paths, threshold=0.0, min_agreement=1)
    assert len(preds) == len(paths)
    for p in preds:
        assert p.label == p.top_class in CLASSES and not p.abstained
        assert p.n_backbones == 3 and 1 <= p.agreement <= 3
        assert set(p.per_backbone) == set(result.backbones)
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert p.confidence == pytest.approx(p.probabilities[p.top_class])
    # PIL images give the same answer as paths
    pil = [Image.open(p) for p in paths]
    again = model.predict(pil, threshold=0.0, min_agreement=1)
    assert [p.top_class for p in again] == [p.top_class for p in preds]


def test_high_threshold_or_required_agreement_abstains(trained, dataset):
    result, _, _ = trained
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    paths = [it.path for it in dataset[:4]]
    for p in model.predict(paths, threshold=1.01):
        assert p.abstained and p.label == "unidentified" and p.top_class in CLASSES
    for p in model.predict(paths, threshold=0.0, min_agreement=4):
        assert p.abstained


def test_soft_voting_and_predict_proba(trained, dataset):
    result, _, _ = trained
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    paths = [it.path for it in dataset[:6]]
    proba = model.predict_proba(paths)
    assert proba.stacked.shape == (3, 6, len(CLASSES))
    assert np.allclose(proba.ensemble, proba.stacked.mean(0))
    soft = model.predict(paths, voting="soft", threshold=0.0, min_agreement=1)
    assert [p.top_class for p in soft] == [CLASSES[i] for i in proba.ensemble.argmax(1)]


def test_load_ensemble_is_cached_per_process_by_sha256(trained):
    result, _, _ = trained
    a = api.load_ensemble(result.checkpoint_path, device="cpu")
    b = api.load_ensemble(result.checkpoint_path, device="cpu")
    assert a is b and a.sha256 == result.checkpoint_sha256
    clear_cache()
    assert api.load_ensemble(result.checkpoint_path, device="cpu") is not a


def test_the_learned_classes_are_recognised(trained, dataset):
    result, _, _ = trained
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    preds = model.predict([it.path for it in dataset], threshold=0.0, min_agreement=1)
    acc = np.mean([p.top_class == it.label for p, it in zip(preds, dataset)])
    assert acc >= 0.8  # colours are easy even for random-init features


def test_second_training_featurises_nothing_and_new_items_only_themselves(trained, dataset, tmp_path):
    _, _, base = trained
    kw = dict(classes=CLASSES, ensemble=["efficientnet_lite0"], mode="default", epochs=2, cache_dir=base / "cache",
              out_dir=tmp_path, device="cpu", weights=None, seed=0, config_overrides=TINY)
    again = api.train(dataset, **kw)
    assert again.metrics["featurised"]["efficientnet_lite0"]["new"] == 0
    extra = make_images(tmp_path / "more", per_class=2, offset=100)
    grown = api.train(dataset + extra, **kw)
    assert grown.metrics["featurised"]["efficientnet_lite0"]["new"] == len(extra)


def test_training_is_deterministic_for_a_seed(dataset, tmp_path):
    kw = dict(classes=CLASSES, ensemble=["efficientnet_lite0"], mode="frozen", epochs=3, cache_dir=tmp_path / "c",
              device="cpu", weights=None, seed=3, config_overrides=TINY)
    a = api.train(dataset, out_dir=tmp_path / "a", **kw)
    b = api.train(dataset, out_dir=tmp_path / "b", **kw)
    ha = load_checkpoint(a.checkpoint_path)[0]["heads"]["efficientnet_lite0"]
    hb = load_checkpoint(b.checkpoint_path)[0]["heads"]["efficientnet_lite0"]
    assert all(torch.equal(ha[k], hb[k]) for k in ha)


def test_frozen_mode_uses_the_papers_head(dataset, tmp_path):
    r = api.train(dataset, classes=CLASSES, ensemble=["efficientnet_lite0"], mode="frozen", epochs=2,
                  cache_dir=tmp_path / "c", out_dir=tmp_path / "o", device="cpu", weights=None, config_overrides=TINY)
    head = load_checkpoint(r.checkpoint_path)[0]["heads"]["efficientnet_lite0"]
    linears = [k for k in head if k.endswith(".weight") and head[k].ndim == 2]
    norms = [k for k in head if k.endswith("running_mean") and k != "mean"]
    assert len(linears) == 3 and len(norms) == 2
    assert r.config["features"] == "pooled"


def test_cancelling_raises_training_cancelled(dataset, tmp_path):
    with pytest.raises(api.TrainingCancelled):
        api.train(dataset, classes=CLASSES, ensemble=["efficientnet_lite0"], epochs=2, cache_dir=tmp_path / "c",
                  out_dir=tmp_path / "o", device="cpu", weights=None, config_overrides=TINY,
                  should_cancel=lambda: True)
    assert not list((tmp_path / "o").glob("*.pt")) if (tmp_path / "o").exists() else True


def test_labels_outside_the_classes_are_refused(dataset, tmp_path):
    with pytest.raises(ValueError):
        api.train(dataset, classes=CLASSES[:2], ensemble=["efficientnet_lite0"], cache_dir=tmp_path, out_dir=tmp_path,
                  weights=None, device="cpu")


def test_default_weights_never_fall_back_to_random(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(api.MissingWeightsError):
        api.train(dataset, classes=CLASSES, ensemble=["resnet50"], cache_dir=tmp_path, out_dir=tmp_path, device="cpu")


def test_cpu_device_resolution():
    from classifier.ml.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training_and_inference_match_cpu(dataset, tmp_path):
    r = api.train(dataset, classes=CLASSES, ensemble=["efficientnet_lite0", "efficientnet_lite1"], epochs=5,
                  cache_dir=tmp_path / "c", out_dir=tmp_path / "o", device="cuda", weights=None,
                  config_overrides=TINY)
    paths = [it.path for it in dataset]
    gpu = api.load_ensemble(r.checkpoint_path, device="cuda").predict_proba(paths)
    cpu = api.load_ensemble(r.checkpoint_path, device="cpu", precision="fp32").predict_proba(paths)
    agree = (gpu.ensemble.argmax(1) == cpu.ensemble.argmax(1)).mean()
    assert agree >= 0.95
    assert np.abs(gpu.ensemble - cpu.ensemble).max() < 0.1


def test_finetune_mode_trains_the_last_blocks_and_ships_them(dataset, tmp_path):
    r = api.train(dataset, classes=CLASSES, ensemble=["efficientnet_lite0"], mode="finetune", epochs=3,
                  cache_dir=tmp_path / "c", out_dir=tmp_path / "o", device="cpu", weights=None,
                  config_overrides=dict(TINY, finetune_epochs=1))
    ckpt = load_checkpoint(r.checkpoint_path)[0]
    assert "efficientnet_lite0" in ckpt["backbone_state"]
    assert any(h.get("phase") == "finetune" for h in r.history)
    preds = api.load_ensemble(r.checkpoint_path, device="cpu").predict([it.path for it in dataset[:3]])
    assert len(preds) == 3 and all(p.top_class in CLASSES for p in preds)


def test_finetune_mode_is_refused_for_backbones_without_a_split(dataset, tmp_path):
    with pytest.raises(ValueError, match="finetune"):
        api.train(dataset, classes=CLASSES, ensemble=["resnet50"], mode="finetune", cache_dir=tmp_path,
                  out_dir=tmp_path, device="cpu", weights=None, config_overrides={"input_size": 64})


def test_probabilities_from_features_extracted_once_are_those_of_predict(trained, dataset):
    """Measuring several versions of one ensemble on the same cells reads their features once."""
    result, _, _ = trained
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    paths = [it.path for it in dataset]
    features, colour = model.view_features(paths)
    assert {b: f.shape[:2] for b, f in features.items()} == {b: (len(paths), len(model.tta_views))
                                                              for b in model.backbones}
    assert colour.shape == (len(paths), 40)
    direct = model.predict_proba(paths, keep_features=True)
    again = model.proba_from_features(features, colour)
    np.testing.assert_allclose(again.ensemble, direct.ensemble, atol=1e-4)
    np.testing.assert_allclose(again.ood_scores, direct.ood_scores, atol=1e-3)
    for b in model.backbones:
        np.testing.assert_allclose(again.features[b], direct.features[b], atol=1e-4)
    assert [p.label for p in model.decide(again)] == [p.label for p in model.decide(direct)]
