import numpy as np
import pytest

from classifier.ml.voting import abstain_mask, abstention_curve, choose_threshold, default_min_agreement, vote


def probs(*rows):
    return np.array(rows, dtype=np.float64)[:, None, :]  # [backbones, 1 cell, classes]


def test_majority_vote_takes_the_most_backbones():
    p = probs([0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8])
    r = vote(p, "majority")
    assert r.label[0] == 0 and r.agreement[0] == 2
    assert r.confidence[0] == pytest.approx((0.6 + 0.5 + 0.1) / 3)


def test_majority_vote_differs_from_soft_vote_when_one_backbone_is_very_sure():
    p = probs([0.55, 0.45, 0.0], [0.55, 0.45, 0.0], [0.0, 1.0, 0.0])
    assert vote(p, "majority").label[0] == 0
    soft = vote(p, "soft")
    assert soft.label[0] == 1 and soft.agreement[0] == 1


def test_majority_tie_is_broken_by_mean_probability():
    # two backbones each for class 0 and class 1, one for class 2; class 1 has the higher mean
    p = probs([0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.05, 0.9, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6])
    r = vote(p, "majority")
    assert r.label[0] == 1 and r.agreement[0] == 2
    p2 = probs([0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.45, 0.55, 0.0], [0.2, 0.2, 0.6])
    assert vote(p2, "majority").label[0] == 0


def test_abstains_on_a_split_vote_and_on_low_confidence():
    split = probs([0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8])
    r = vote(split)
    assert r.agreement[0] == 1
    assert abstain_mask(r, threshold=0.0, min_agreement=default_min_agreement(3))[0]
    sure = vote(probs([0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1]))
    assert not abstain_mask(sure, threshold=0.5, min_agreement=2)[0]
    assert abstain_mask(sure, threshold=0.95, min_agreement=2)[0]
    assert abstain_mask(sure, threshold=0.0, min_agreement=4)[0]  # the lab can ask for more agreement


def test_default_min_agreement_is_a_strict_majority():
    assert [default_min_agreement(n) for n in (1, 2, 3, 5)] == [1, 2, 2, 3]


def test_abstention_curve_trades_referrals_for_accuracy():
    rng = np.random.default_rng(0)
    n, c = 200, 4
    y = rng.integers(0, c, n)
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(0, 1, n) < conf  # confident cells are more often right
    pred = np.where(correct, y, (y + 1) % c)
    p = np.full((n, c), 0.0)
    p[np.arange(n), pred] = conf
    p[np.arange(n), (pred + 1) % c] = 1 - conf
    stacked = np.stack([p, p, p])
    curve = abstention_curve(stacked, y, thresholds=np.array([0.0, 0.5, 0.8, 0.95]))
    assert [c["threshold"] for c in curve] == [0.0, 0.5, 0.8, 0.95]
    assert curve[0]["referred"] == 0.0 and curve[0]["accuracy_accepted"] == pytest.approx(correct.mean())
    referred = [c["referred"] for c in curve]
    assert referred == sorted(referred) and referred[-1] > 0.5 > referred[1]
    assert curve[2]["accuracy_accepted"] > curve[0]["accuracy_accepted"]
    t = choose_threshold(curve, target_accuracy=0.85, max_referred=0.9)
    chosen = next(c for c in curve if c["threshold"] == t)
    assert chosen["accuracy_accepted"] >= 0.85


def test_unknown_voting_is_refused():
    with pytest.raises(ValueError):
        vote(probs([1.0, 0.0]), "median")
