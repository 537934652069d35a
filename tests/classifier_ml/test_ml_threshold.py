"""Every version applies a confidence threshold: fitted on enough validation cells, else the
conservative default; never 0, also for a checkpoint written before every version had one."""
import numpy as np
import pytest
import torch

from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint, save_checkpoint
from classifier.ml.reasons import LOW_CONFIDENCE
from classifier.ml.voting import (DEFAULT, DEFAULT_THRESHOLD, FITTED, MIN_FIT_CELLS, MIN_THRESHOLD,
                                  abstention_curve, checkpoint_threshold, fit_threshold)


def _curve(n: int, *, calibrated: bool = False, seed: int = 0) -> list[dict]:
    """A validation curve of ``n`` cells on one backbone: confidences spread over (0.34, 1), every
    cell right, or (``calibrated``) each right with the probability its confidence says."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    conf = rng.uniform(0.34, 1.0, n)
    right = rng.uniform(0, 1, n) < (conf if calibrated else 1.0)
    pred = np.where(right, y, (y + 1) % 3)
    p = np.repeat(((1 - conf) / 2)[:, None], 3, axis=1)
    p[np.arange(n), pred] = conf
    return abstention_curve(p[None], y, min_agreement=1)


def test_too_few_validation_cells_give_the_conservative_default_not_a_fit():
    # every one of these 9 cells is right at threshold 0: the old fit chose 0 and referred nothing
    curve = _curve(9)
    assert curve[0]["threshold"] == 0.0 and curve[0]["accuracy_accepted"] == 1.0
    t = fit_threshold(curve, n_cells=9)
    assert (t.value, t.source) == (DEFAULT_THRESHOLD, DEFAULT)
    assert t.value > 0 and "9 validation cells" in t.why and str(MIN_FIT_CELLS) in t.why


def test_a_fit_on_enough_cells_never_goes_below_even_odds():
    curve = _curve(400)  # all right at any threshold: the target is met at 0
    t = fit_threshold(curve, n_cells=400, max_referred=0.5)
    assert t.source == FITTED and t.value == MIN_THRESHOLD and "400 validation cells" in t.why


def test_a_fit_raises_the_threshold_until_the_accepted_cells_reach_the_target():
    curve = _curve(400, calibrated=True)
    t = fit_threshold(curve, n_cells=400, target_accuracy=0.95, max_referred=0.9)
    chosen = next(c for c in curve if c["threshold"] == t.value)
    assert t.source == FITTED and t.value > MIN_THRESHOLD and chosen["accuracy_accepted"] >= 0.95
    assert all(c["accuracy_accepted"] < 0.95 for c in curve if MIN_THRESHOLD <= c["threshold"] < t.value)


def test_no_threshold_within_the_referral_budget_gives_the_default():
    curve = _curve(400, calibrated=True)
    t = fit_threshold(curve, n_cells=400, max_referred=0.05)  # even odds alone refers about a quarter
    assert (t.value, t.source) == (DEFAULT_THRESHOLD, DEFAULT) and "at most 5%" in t.why


def test_the_curve_refers_split_votes_and_the_cells_referred_anyway_at_every_threshold():
    p = np.array([[[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]]])  # one backbone, three cells, all class 0
    y = np.array([0, 1, 0])
    plain = abstention_curve(p, y, thresholds=[0.0, 0.7], min_agreement=1)
    anyway = abstention_curve(p, y, thresholds=[0.0, 0.7], min_agreement=1,
                              referred_anyway=np.array([False, True, False]))
    assert [c["referred"] for c in plain] == pytest.approx([0, 1 / 3])
    assert [c["referred"] for c in anyway] == pytest.approx([1 / 3, 2 / 3])
    assert [c["accuracy_accepted"] for c in anyway] == [1.0, 1.0]


@pytest.mark.parametrize("ckpt", [
    {"default_threshold": 0.0, "metrics": {"n_val": 9, "abstention_curve": _curve(9)}, "config": {}},
    {"default_threshold": 0.0, "metrics": {"untrained": True}},
    {},
])
def test_a_checkpoint_written_without_a_threshold_gets_the_default_never_zero(ckpt):
    t = checkpoint_threshold(ckpt)
    assert (t.value, t.source) == (DEFAULT_THRESHOLD, DEFAULT) and t.why


def test_a_checkpoint_written_before_with_enough_cells_is_refitted_by_the_same_rule():
    curve = _curve(400, calibrated=True)
    ckpt = {"default_threshold": 0.3, "metrics": {"n_val": 400, "abstention_curve": curve},
            "config": {"target_accuracy": 0.95, "max_referred": 0.9}}
    t = checkpoint_threshold(ckpt)
    assert t == fit_threshold(curve, n_cells=400, target_accuracy=0.95, max_referred=0.9)
    assert t.source == FITTED and t.value >= MIN_THRESHOLD


def test_training_on_few_cells_writes_the_default_into_the_checkpoint_and_result(trained):
    result, _, _ = trained
    ckpt, _ = load_checkpoint(result.checkpoint_path)
    assert result.metrics["n_val"] < MIN_FIT_CELLS
    assert result.threshold.value == DEFAULT_THRESHOLD and result.threshold.source == DEFAULT
    assert (ckpt["default_threshold"], ckpt["threshold_source"]) == (DEFAULT_THRESHOLD, DEFAULT)
    assert result.metrics["threshold"] == DEFAULT_THRESHOLD
    at = next(c for c in result.metrics["abstention_curve"] if c["threshold"] == DEFAULT_THRESHOLD)
    assert result.metrics["val_referred"] == pytest.approx(at["referred"])
    assert api.load_ensemble(result.checkpoint_path, device="cpu").threshold == result.threshold


def test_an_old_checkpoint_with_threshold_zero_refers_low_confidence_cells_when_loaded(trained, dataset, tmp_path):
    result, _, _ = trained
    ckpt, _ = load_checkpoint(result.checkpoint_path)
    for key in ("threshold_source", "threshold_why", "format", "format_version"):
        ckpt.pop(key)
    ckpt["default_threshold"] = 0.0  # what every version trained on few cells carried
    path, _ = save_checkpoint(ckpt, tmp_path)
    assert torch.load(path, weights_only=True)["default_threshold"] == 0.0
    model = api.load_ensemble(path, device="cpu")
    assert model.default_threshold == DEFAULT_THRESHOLD and model.threshold.source == DEFAULT
    paths = [it.path for it in dataset]
    proba = model.predict_proba(paths)
    preds = model.decide(proba)  # no threshold given: the checkpoint's applies
    low = [i for i, p in enumerate(preds) if p.confidence < DEFAULT_THRESHOLD and p.agreement >= model.min_agreement]
    assert low, "the tiny model has cells under the default to refer"
    for i in low:
        assert preds[i].abstained and preds[i].label == "unidentified" and LOW_CONFIDENCE in preds[i].reasons
    zero = model.decide(proba, threshold=0.0)  # what the silent 0 did: accepted them
    assert any(not zero[i].abstained for i in low)
