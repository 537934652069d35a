"""The out-of-distribution score: unit properties on synthetic features, and on real images a
model trained on PBC cells flags smear-field crops from another microscope and stain (BCCD)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.engine import OUT_OF_DISTRIBUTION, EnsembleModel
from classifier.ml.ood import (MIN_VALIDATION, OODCheck, OODModel, colour_features, fit_ood, fit_ood_check,
                                kth_distance, l2_normalise, nearest)

REPO = Path(__file__).resolve().parents[2]


def _cluster(rng, n, centre, spread=0.3):
    return centre + rng.normal(0, spread, (n, len(centre)))


def _features(seed=0, n=400, dim=64, shift=0.0, spread=0.3, direction=0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1, (3, dim))
    half = slice(0, dim // 2) if direction == 0 else slice(dim // 2, dim)
    centres[:, half] += shift
    x = np.concatenate([_cluster(rng, n // 3, c, spread) for c in centres])
    y = np.repeat(np.arange(3), n // 3)
    return {"a": x, "b": x[:, ::-1] * 2 + 1}, y


def test_kth_distance_skips_the_cell_itself_only_when_asked():
    bank = l2_normalise(np.eye(4) + 0.01)
    assert np.allclose(kth_distance(bank, bank, 1), 0, atol=1e-6)
    assert (kth_distance(bank, bank, 1, exclude_self=True) > 0.5).all()
    d, idx = nearest(bank, bank, 2, exclude_self=True)
    assert not (idx == np.arange(4)[:, None]).any() and idx.shape == (4, 2)


def test_in_domain_cells_pass_and_shifted_cells_are_flagged():
    train, y = _features(0)
    val, _ = _features(1, n=150)
    model = fit_ood(train, val, train_labels=y)
    assert model.threshold_from == "validation" and model.n_validation == 150
    same, _ = _features(2, n=600)
    foreign, _ = _features(3, n=300, shift=1.5)
    assert model.flags(model.score(same)).mean() <= 0.06
    assert model.flags(model.score(foreign)).mean() == 1.0
    # the threshold is the validation cells' 97.5th percentile: about 2.5 % of them over it
    assert 0.0 < model.expected_rate <= 0.04


def test_state_round_trip_gives_the_same_scores_and_loads_weights_only(tmp_path):
    train, y = _features(0)
    val, _ = _features(1, n=150)
    model = fit_ood(train, val, train_labels=y)
    torch.save(model.state_dict(), tmp_path / "ood.pt")
    back = OODModel.from_state(torch.load(tmp_path / "ood.pt", weights_only=True))
    probe, _ = _features(4, n=60, shift=0.5)
    np.testing.assert_allclose(back.score(probe), model.score(probe), rtol=1e-2, atol=1e-2)  # bank kept in fp16
    assert back.threshold == model.threshold and back.k == model.k
    with pytest.raises(ValueError, match="unknown out-of-distribution method"):
        OODModel.from_state(dict(model.state_dict(), method="energy"))


def test_verified_cells_of_a_new_domain_adapt_the_score_and_another_domain_stays_flagged():
    """The loop a new lab needs: its cells are flagged until some of them, verified, join the
    training cells; then cells like them pass, while a third domain is still flagged."""
    train, y = _features(0)
    val, _ = _features(1, n=150)
    lab, lab_y = _features(5, n=60, shift=1.5, spread=0.5)  # the lab's microscope: shifted and noisier
    new_lab, _ = _features(6, n=300, shift=1.5, spread=0.5)
    other, _ = _features(7, n=300, shift=1.5, spread=0.5, direction=1)
    before = fit_ood(train, val, train_labels=y)
    assert before.flags(before.score(new_lab)).mean() == 1.0
    adapted = fit_ood({b: np.concatenate([train[b], lab[b]]) for b in train}, val,
                      train_labels=np.concatenate([y, lab_y]))
    assert adapted.flags(adapted.score(new_lab)).mean() <= 0.1
    assert adapted.flags(adapted.score(other)).mean() == 1.0
    same, _ = _features(2, n=600)
    assert adapted.flags(adapted.score(same)).mean() <= 0.06


def test_few_validation_cells_set_the_threshold_from_the_training_cells():
    train, y = _features(0)
    val, _ = _features(1, n=MIN_VALIDATION - 1)
    model = fit_ood(train, {b: v[: MIN_VALIDATION - 1] for b, v in val.items()}, train_labels=y)
    assert model.threshold_from == "training (leave-one-out)"
    same, _ = _features(2, n=600)
    assert model.flags(model.score(same)).mean() <= 0.06


def test_a_large_training_set_is_subsampled_by_class():
    train, y = _features(0, n=900)
    model = fit_ood(train, {}, train_labels=y, max_bank=300)
    assert model.n_bank == 300 and model.banks["a"].shape == (300, 64)


def test_every_prediction_carries_its_score_and_reason(trained, dataset):
    result, events, _ = trained
    assert "fitting_ood" in [e.get("stage") for e in events]
    assert result.metrics["ood"]["threshold_from"] in ("validation", "training (leave-one-out)")
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    model = EnsembleModel(ckpt, digest, device="cpu", precision="fp32")
    assert model.ood_checked
    preds = model.predict([it.path for it in dataset])
    assert all(p.ood_score is not None for p in preds)
    for p in preds:
        assert p.abstained == bool(p.reasons)
        assert p.out_of_distribution == (p.ood_score > model.ood.threshold)
    # a checkpoint from before the score: no score, and nothing invented
    old = EnsembleModel(dict(ckpt, ood=None), digest, device="cpu", precision="fp32")
    assert not old.ood_checked
    assert all(p.ood_score is None and OUT_OF_DISTRIBUTION not in p.reasons for p in old.predict([dataset[0].path]))


@pytest.mark.slow
def test_model_trained_on_pbc_cells_flags_bccd_field_crops_and_not_held_out_pbc_cells(tmp_path):
    """Real ImageNet weights (shipped in a Python package) and real images: the demo's PBC cells
    (CellaVision, May-Grünwald-Giemsa) against white cells cropped from the demo's BCCD fields."""
    from slides.pipeline import as_stored, find_cells

    demo = REPO / "demo" / "cells"
    classes = sorted(d.name for d in demo.iterdir() if d.is_dir())
    train, held = [], []
    for c in classes:
        for i, p in enumerate(sorted((demo / c).iterdir())):
            (held if i % 5 == 0 else train).append((p, c))
    items = [api.TrainItem(path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), label=c) for p, c in train]
    result = api.train(items, classes=classes, ensemble=["efficientnet_lite0"], mode="default", epochs=30,
                       cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", device="cpu",
                       config_overrides={"views": ["id", "flip"], "input_size": 224})
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    crops = [as_stored(c.crop) for f in sorted((REPO / "demo" / "fields").glob("*.jpg"))
             for c in find_cells(Image.open(f)).cells if c.needs_model]
    assert len(crops) >= 5
    foreign = model.predict(crops)
    assert all(p.out_of_distribution and p.abstained and p.label == "unidentified" for p in foreign)
    assert all("unlike the training images" in p.reason for p in foreign)
    in_domain = model.predict([p for p, _ in held])
    assert sum(p.out_of_distribution for p in in_domain) <= 2  # of 27; about 2.5 % expected
    # the same held-out cells under another stain's colour (hue turned by 60 degrees): flagged
    restained = model.predict([_hue_turned(p, 60) for p, _ in held])
    assert sum(p.out_of_distribution for p in restained) >= 24


def _hue_turned(path, degrees):
    hsv = np.array(Image.open(path).convert("HSV")).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(degrees / 360 * 255)) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def test_colour_statistics_read_the_stain_and_the_check_flags_either_score():
    rng = np.random.default_rng(0)
    stained = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    f = colour_features(stained)
    assert f.shape == (6, 40) and np.isfinite(f).all()
    redder = stained.copy()
    redder[:, 0] = np.clip(redder[:, 0].astype(int) + 60, 0, 255)
    assert (colour_features(redder)[:, 0] > f[:, 0]).all()  # the red channel's mean moved
    train, y = _features(0)
    val, _ = _features(1, n=150)
    colour_train = rng.normal(0, 1, (len(y), 40))
    colour_val = rng.normal(0, 1, (150, 40))
    check = fit_ood_check(train, val, colour_train, colour_val, train_labels=y)
    assert check.expected_rate <= 0.025 + 1e-9
    same, _ = _features(2, n=300)
    assert check.flags(check.assess(same, rng.normal(0, 1, (300, 40))).score).mean() <= 0.06
    # the same cells under another stain: flagged through the colour score alone
    assert check.flags(check.assess(same, rng.normal(0, 1, (300, 40)) + 3).score).mean() >= 0.95
    back = OODCheck.from_state(torch.load(_saved(check.state_dict()), weights_only=True))
    np.testing.assert_allclose(back.assess(same, colour_val[:1].repeat(300, 0)).score,
                               check.assess(same, colour_val[:1].repeat(300, 0)).score, atol=1e-2)


def _saved(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_a_cell_accepted_only_thanks_to_a_few_neighbours_needs_them_to_back_the_vote():
    train, y = _features(0)
    val, _ = _features(1, n=150)
    lab, lab_y = _features(5, n=30, shift=1.5, spread=0.8)  # a few of the lab's cells, widely spread
    adapted = fit_ood({b: np.concatenate([train[b], lab[b]]) for b in train}, val,
                      train_labels=np.concatenate([y, lab_y]))
    new_lab, new_y = _features(6, n=90, shift=1.5, spread=0.8)
    a = adapted.assess(new_lab)
    far = a.distance > adapted.far_threshold
    assert far.mean() > 0.3  # far from most training cells
    assert adapted.neighbours_disagree(a, new_y).mean() <= 0.1  # their neighbours back the right class
    wrong = adapted.neighbours_disagree(a, (new_y + 1) % 3)
    assert wrong[far].all() and not wrong[~far].any()  # ... not a wrong one; near cells are left alone
    same, same_y = _features(2, n=300)
    b = adapted.assess(same)
    assert adapted.neighbours_disagree(b, (same_y + 1) % 3).mean() <= 0.05  # in-domain: the rule stays out of it


def test_a_class_known_from_only_a_few_of_a_labs_cells_is_thinly_supported_until_the_lab_verifies_more():
    train, y = _features(0, n=600)
    val, val_y = _features(1, n=150)
    home = fit_ood(train, val, train_labels=y, val_labels=val_y, support_m=10)
    assert home.support_m == 10 and np.isfinite(home.support_threshold)
    same, same_y = _features(2, n=300)
    a = home.assess(same)
    assert a.support.shape == (300, 3)
    assert home.thinly_supported(a, same_y).mean() <= 0.05  # in-domain: about 1 % over the threshold
    assert home.thinly_supported(a, (same_y + 1) % 3).mean() >= 0.95  # another class's cells do not support it

    new_lab, new_y = _features(6, n=90, shift=2.0, spread=0.3)
    for per_class, most in ((4, None), (30, 0.2)):
        lab, lab_y = _features(5, n=3 * per_class, shift=2.0, spread=0.3)
        adapted = fit_ood({b: np.concatenate([train[b], lab[b]]) for b in train}, val,
                          train_labels=np.concatenate([y, lab_y]), val_labels=val_y, support_m=10)
        b = adapted.assess(new_lab)
        assert b.score.max() <= adapted.threshold or per_class == 4  # near the lab's cells: not "unlike"
        thin = adapted.thinly_supported(b, new_y)
        if most is None:  # 4 of the class like it: the 10th is a home cell, far away
            assert thin.mean() >= 0.9
        else:  # 30 of them: supported
            assert thin.mean() <= most
    assert adapted.thinly_supported(adapted.assess(same), same_y).mean() <= 0.05


def test_class_support_survives_the_checkpoint_and_an_older_checkpoint_has_none():
    train, y = _features(0)
    val, val_y = _features(1, n=150)
    model = fit_ood(train, val, train_labels=y, val_labels=val_y, support_m=10)
    state = model.state_dict()
    back = OODModel.from_state(torch.load(_saved(state), weights_only=True))
    q, qy = _features(3, n=60)
    assert np.allclose(back.assess(q).support, model.assess(q).support, atol=1e-3)
    assert back.support_threshold == pytest.approx(model.support_threshold)
    old = {k: v for k, v in state.items() if not k.startswith("support")}
    older = OODModel.from_state(old)
    assert older.assess(q).support is None and not older.thinly_supported(older.assess(q), qy).any()


def test_a_batch_shifted_a_little_as_a_whole_is_unlike_the_training_images_though_few_cells_are():
    from classifier.ml.ood import BATCH_MIN, batch_threshold

    rng = np.random.default_rng(0)
    train, y = _features(0, n=600)
    val, val_y = _features(1, n=300)
    check = fit_ood_check(train, val, rng.normal(0, 1, (len(y), 40)), rng.normal(0, 1, (300, 40)),
                          train_labels=y, val_labels=val_y)
    assert check.reference_scores is not None and len(check.reference_scores) == 300
    assert batch_threshold(40) > batch_threshold(400) > 0.6

    def batch(seed, n, colour_shift):
        f, fy = _features(seed, n=n)
        return check.assess(f, rng.normal(0, 1, (n, 40)) + colour_shift).score, fy

    home_ranks = []
    for seed in range(2, 12):
        s, fy = batch(seed, 60, 0.0)
        mean, limit = check.batch_unlike(s, fy)
        home_ranks.append(mean)
        assert mean < limit  # a home batch is not unlike
    assert abs(np.mean(home_ranks) - 0.5) < 0.1
    one_class, fy = batch(12, 120, 0.0)
    mean, limit = check.batch_unlike(one_class[fy == 1], fy[fy == 1])  # a batch of one class only: ranked within it
    assert mean < limit
    s, fy = batch(13, 90, 0.7)  # every cell's colour moved a little
    assert check.flags(s).mean() < 0.3  # most cells pass one by one ...
    mean, limit = check.batch_unlike(s, fy)
    assert mean > limit  # ... the batch does not
    assert check.batch_unlike(s[:BATCH_MIN - 1], fy[:BATCH_MIN - 1]) is None  # too few cells to judge a batch
    back = OODCheck.from_state(torch.load(_saved(check.state_dict()), weights_only=True))
    assert back.batch_unlike(s, fy) == pytest.approx(check.batch_unlike(s, fy))
    older = {k: v for k, v in check.state_dict().items() if not k.startswith("reference")}
    assert OODCheck.from_state(older).batch_unlike(s, fy) is None


def test_in_a_batch_unlike_the_training_images_only_confident_calls_are_accepted(trained, dataset):
    import copy

    from classifier.ml.ood import BATCH_CONFIDENCE, BATCH_MIN
    from classifier.ml.reasons import BATCH_UNLIKE, LOW_CONFIDENCE

    result, _, _ = trained
    cached = api.load_ensemble(result.checkpoint_path, device="cpu")
    assert cached.batch_confidence == BATCH_CONFIDENCE == 0.9  # no batch_confidence in the recipe: the default
    paths = [it.path for it in dataset]
    assert len(paths) >= BATCH_MIN
    proba = cached.predict_proba(paths, align=False)
    assert not any(BATCH_UNLIKE in p.reasons for p in cached.decide(copy.copy(proba), threshold=0.0))
    # the same cells as a batch unlike the training images: every reference score under theirs (the
    # process's cached model is left as it is)
    model = copy.copy(cached)
    model.ood = copy.copy(cached.ood)
    model.ood.reference_scores = np.full_like(cached.ood.reference_scores, proba.ood_scores.min() - 1.0)
    mean, limit = model.ood.batch_unlike(proba.ood_scores, proba.ensemble.argmax(1))
    assert mean > limit
    ood = model.ood.flags(proba.ood_scores)
    plain = cached.decide(copy.copy(proba), threshold=0.0)
    conf = np.array([p.confidence for p in plain])
    model.batch_confidence = float(np.median(conf[~ood]))  # half of the cells over it, for the tiny model
    preds = model.decide(copy.copy(proba), threshold=0.0)
    confident = (conf >= model.batch_confidence) & ~ood
    assert confident.any() and (~confident & ~ood).any()
    for p, q, sure, far in zip(preds, plain, confident, ood):
        assert (BATCH_UNLIKE in p.reasons) == (not sure and not far)  # a flagged cell keeps its own reason
        if sure:  # accepted exactly as outside such a batch
            assert (p.label, p.abstained, p.reasons) == (q.label, q.abstained, q.reasons)
        else:
            assert p.abstained and p.label == "unidentified"
    # the lab's threshold, where higher, is the floor: a call under it is referred for both reasons
    strict = model.decide(copy.copy(proba), threshold=float(conf.max()) + 0.01)
    assert all(p.abstained for p in strict)
    assert all({BATCH_UNLIKE, LOW_CONFIDENCE} <= set(p.reasons) for p, far in zip(strict, ood) if not far)
    # over 1: every cell of such a batch is referred (the rule as it was)
    model.batch_confidence = 1.01
    assert all(p.abstained for p in model.decide(copy.copy(proba), threshold=0.0))
