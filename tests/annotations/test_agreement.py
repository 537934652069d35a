"""The agreement figures are the libraries' own (scikit-learn, statsmodels), on the right inputs."""
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from annotations.agreement import agreement_report


def readings_of(table: dict[str, list[str]]):
    return [(i, rater, code) for rater, codes in table.items() for i, code in enumerate(codes)]


def test_cohen_kappa_per_pair_matches_scikit_learn():
    a = ["n", "n", "l", "l", "m", "m", "n", "l"]
    b = ["n", "l", "l", "l", "m", "n", "n", "l"]
    report = agreement_report(readings_of({"ann": a, "bob": b}))
    (pair,) = report.pairs
    assert (pair.rater_a, pair.rater_b, pair.n) == ("ann", "bob", 8)
    assert pair.kappa == pytest.approx(cohen_kappa_score(a, b))
    assert pair.observed == pytest.approx(6 / 8)


def test_fleiss_kappa_overall_matches_statsmodels():
    a = ["n", "n", "l", "m", "m"]
    b = ["n", "l", "l", "m", "n"]
    c = ["n", "n", "l", "m", "m"]
    report = agreement_report(readings_of({"a": a, "b": b, "c": c}), classes=["n", "l", "m"])
    table = np.array([[sum(r[i] == k for r in (a, b, c)) for k in ("n", "l", "m")] for i in range(5)])
    assert report.fleiss_kappa == pytest.approx(fleiss_kappa(table, method="fleiss"))
    assert (report.fleiss_n_images, report.fleiss_n_raters) == (5, 3)
    assert len(report.pairs) == 3


def test_confusion_between_experts_is_symmetric_and_names_the_confused_classes():
    report = agreement_report(readings_of({"a": ["n", "n", "l", "b"], "b": ["b", "n", "l", "n"]}), classes=["n", "b", "l"])
    m = np.array(report.confusion)
    assert (m == m.T).all()
    assert report.classes == ["n", "b", "l"]
    assert report.top_confusions[0] == ("n", "b", 2)
    per = {c.code: c for c in report.per_class}
    assert per["l"].specific_agreement == 1.0
    assert per["b"].specific_agreement == 0.0
    assert per["n"].specific_agreement == pytest.approx(2 / 4)  # one agreeing pair (counted twice), two disagreeing


def test_perfect_agreement_on_one_class_leaves_kappa_undefined_not_nan():
    report = agreement_report(readings_of({"a": ["n", "n"], "b": ["n", "n"]}))
    assert report.pairs[0].kappa is None and report.pairs[0].observed == 1.0
    assert report.fleiss_kappa is None


def test_single_readings_do_not_count():
    report = agreement_report([(1, "a", "n"), (2, "b", "l")])
    assert report.n_images == 0 and report.pairs == [] and report.fleiss_kappa is None
