"""The paired comparison of two versions on the same held-out cells (pure, no database)."""
import pytest

from reports import metrics


def test_paired_comparison_counts_discordant_cells_and_tests_them_with_mcnemar_exact():
    actual = list("aaaaabbbbb")
    # new right on 8 cells, old right on 6: new-only 3, old-only 1, both right 5, both wrong 1
    new = list("aaaaabbbaa")
    old = list("aaaaaaaaba")
    c = metrics.paired_comparison(actual, new, old)
    assert (c["n"], c["both_right"], c["new_only"], c["old_only"], c["both_wrong"]) == (10, 5, 3, 1, 1)
    assert c["new_accuracy"] == pytest.approx(0.8) and c["old_accuracy"] == pytest.approx(0.6)
    assert c["difference"] == pytest.approx(0.2)
    # exact McNemar: two-sided binomial on the 4 discordant cells, 2 * P(X <= 1 | n=4, p=1/2) = 10/16
    assert c["mcnemar_p"] == pytest.approx(0.625)
    # Bonett & Price adjusted Wald interval, computed by hand for these counts
    assert c["difference_ci"] == pytest.approx([-0.222137, 0.555471], abs=1e-5)
    lo, hi = c["new_accuracy_ci"]
    assert lo < 0.8 < hi


def test_identical_classifiers_are_not_different():
    actual = ["a"] * 30 + ["b"] * 30
    pred = ["a"] * 25 + ["b"] * 35
    c = metrics.paired_comparison(actual, pred, pred)
    assert c["new_only"] == c["old_only"] == 0 and c["mcnemar_p"] == pytest.approx(1.0)
    assert c["difference"] == 0 and c["difference_ci"][0] < 0 < c["difference_ci"][1]


def test_a_clear_difference_on_many_cells_is_significant():
    actual = ["a"] * 200
    new = ["a"] * 190 + ["b"] * 10
    old = ["a"] * 160 + ["b"] * 40
    c = metrics.paired_comparison(actual, new, old)
    assert c["new_only"] == 30 and c["old_only"] == 0
    assert c["mcnemar_p"] < 1e-6 and c["difference_ci"][0] > 0


def test_paired_comparison_refuses_sequences_of_different_lengths():
    with pytest.raises(ValueError):
        metrics.paired_comparison(["a"], ["a", "b"], ["a"])
