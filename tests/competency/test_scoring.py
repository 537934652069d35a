"""The proficiency score against values worked out by hand (no database)."""
import pytest

from competency.draw import DrawRefused, draw
from competency.scoring import NOT_CALLED, Item, confusions_across, score

CLASSES = ["lymphocyte", "monocyte", "blast"]
L, M, B = CLASSES

# Ten cells. Reference rows x calls: L: 3 L, 1 M, 1 "not sure" | M: 1 L, 2 M | B: 2 B. Correct: 7.
REFS = [L, L, L, L, M, M, M, B, B, L]
CALLS = [L, L, L, M, M, M, L, B, B, L]
UNSURE = [False] * 9 + [True]


def items(calls=CALLS, unsure=UNSURE, seconds=None):
    seconds = seconds or [2.0] * len(REFS)
    return [Item(position=i + 1, reference=r, given=c, unsure=u, seconds=s)
            for i, (r, c, u, s) in enumerate(zip(REFS, calls, unsure, seconds))]


def test_agreement_its_wilson_interval_and_kappa_match_the_hand_computed_values():
    r = score(items(), classes=CLASSES, min_agreement=0.7, critical=[B])
    assert (r["n"], r["correct"]) == (10, 7)
    assert r["agreement"] == pytest.approx(0.7)
    # Wilson, z = 1.959964: centre (0.7 + z²/20) / (1 + z²/10) = 0.644495, half-width 0.247716
    assert r["agreement_ci"] == pytest.approx([0.396779, 0.892211], abs=1e-5)
    # p_o = 0.7; p_e = (5·4 + 3·3 + 2·2 + 0·1) / 100 = 0.33; kappa = 0.37 / 0.67
    assert r["kappa"] == pytest.approx(0.37 / 0.67, abs=1e-9)


def test_the_confusion_matrix_counts_not_sure_as_not_called():
    r = score(items(), classes=CLASSES, min_agreement=0.7, critical=[B])
    assert r["labels"] == CLASSES
    assert r["matrix_labels"] == CLASSES + [NOT_CALLED]
    assert r["confusion"] == [[3, 1, 0, 1], [1, 2, 0, 0], [0, 0, 2, 0]]
    assert r["not_sure"] == 1
    assert r["confusions"][0]["count"] == 1 and len(r["confusions"]) == 3


def test_per_class_sensitivity_and_ppv():
    r = score(items(), classes=CLASSES, min_agreement=0.7, critical=[B])
    per = {p["class"]: p for p in r["per_class"]}
    assert per[L]["sensitivity"] == pytest.approx(3 / 5) and per[L]["ppv"] == pytest.approx(3 / 4)
    assert per[M]["sensitivity"] == pytest.approx(2 / 3) and per[M]["ppv"] == pytest.approx(2 / 3)
    assert per[B]["sensitivity"] == pytest.approx(1.0) and per[B]["ppv"] == pytest.approx(1.0)


def test_passes_at_the_minimum_and_fails_under_it():
    assert score(items(), classes=CLASSES, min_agreement=0.7, critical=[B])["passed"] is True
    r = score(items(), classes=CLASSES, min_agreement=0.71, critical=[B])
    assert r["passed"] is False and "under the minimum" in r["reasons"][0]


def test_one_critical_class_miss_fails_a_test_whose_agreement_is_high_enough():
    calls = list(CALLS)
    calls[7] = M  # a blast called a monocyte
    r = score(items(calls=calls), classes=CLASSES, min_agreement=0.5, critical=[B])
    assert r["agreement"] == pytest.approx(0.6)
    assert r["passed"] is False
    assert r["critical_misses"] == [{"position": 8, "reference": B, "called": M}]
    assert "blast (critical) called monocyte" in r["reasons"][0]


def test_a_blast_marked_not_sure_is_a_critical_miss_too():
    unsure = list(UNSURE)
    unsure[8] = True
    r = score(items(unsure=unsure), classes=CLASSES, min_agreement=0.5, critical=[B])
    assert r["critical_misses"] == [{"position": 9, "reference": B, "called": NOT_CALLED}]


def test_time_per_cell():
    r = score(items(seconds=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]), classes=CLASSES,
              min_agreement=0.7, critical=[])
    assert r["seconds_total"] == 55.0 and r["seconds_mean"] == 5.5 and r["seconds_median"] == 5.5


def test_referrals_count_as_not_correct_and_are_reported_apart():
    its = [Item(1, L, L), Item(2, L, M, referred=True), Item(3, M, M), Item(4, B, B, referred=True)]
    r = score(its, classes=CLASSES, min_agreement=0.5, critical=[])
    assert (r["correct"], r["referred"]) == (2, 2)
    assert r["agreement"] == 0.5
    assert r["agreement_called"] == 1.0  # both cells it did call are right


def test_confusions_are_summed_across_people():
    a = score(items(), classes=CLASSES, min_agreement=0.7, critical=[])
    total = confusions_across([a, a])
    assert {(c["reference"], c["called"]): c["count"] for c in total}[(L, M)] == 2


POOL = {L: list(range(1, 41)), M: list(range(41, 61)), B: [61, 62, 63]}


def test_the_draw_is_reproducible_and_stratified():
    one = draw(POOL, size=20, minimums={L: 5, M: 5, B: 3}, seed=7)
    assert one == draw(POOL, size=20, minimums={L: 5, M: 5, B: 3}, seed=7)
    assert one != draw(POOL, size=20, minimums={L: 5, M: 5, B: 3}, seed=8)
    assert len(one) == 20 and len({i for i, _ in one}) == 20
    codes = [c for _, c in one]
    assert codes.count(B) == 3 and codes.count(M) >= 5 and codes.count(L) >= 5
    assert all(i in POOL[c] for i, c in one)


def test_a_class_with_too_few_decided_cells_is_named():
    with pytest.raises(DrawRefused) as exc:
        draw(POOL, size=20, minimums={L: 5, B: 5, "basophil": 2}, seed=1)
    assert "blast: 3 decided cell(s), 5 wanted" in str(exc.value)
    assert "basophil: 0 decided cell(s), 2 wanted" in str(exc.value)
    assert {s.code for s in exc.value.shortfalls} == {B, "basophil"}
