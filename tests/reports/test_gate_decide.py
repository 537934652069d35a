"""The gate's decision as a pure function (reports.gate): every outcome from plain inputs, no database."""
from reports import gate
from reports.models import GateDecision

ENOUGH = {"total": 40, "min_total": 20, "per_class": {"a": 20, "b": 20}, "min_per_class": 10, "short": {}, "enough": True}
SMALL = {"total": 6, "min_total": 20, "per_class": {"a": 3, "b": 3}, "min_per_class": 10, "short": {"a": 3, "b": 3},
         "enough": False}


def _vote(acc_a, acc_b):
    return {"overall_accuracy": (acc_a + acc_b) / 2,
            "per_class": {"a": {"sensitivity": acc_a, "support": 20}, "b": {"sensitivity": acc_b, "support": 20}}}


def _decide(**kw):
    args = dict(version=7, active=5, n_items=40, new=None, old=None, failure=None, sample=ENOUGH, margin=0.05,
                names={"a": "Alpha", "b": "Beta"}, comparison={})
    args.update(kw)
    return gate.gate_decide(**args)


def test_the_outcome_values_are_the_models_choices():
    assert {gate.ACTIVATED, gate.FIRST, gate.UNEVALUATED_ACTIVATED, gate.CANDIDATE, gate.TOO_SMALL,
            gate.NOT_EVALUATED} == set(GateDecision.Outcome.values)


def test_without_held_out_labels_it_activates_only_when_nothing_is_active():
    outcome, reasons = _decide(n_items=0, active=None)
    assert outcome == gate.UNEVALUATED_ACTIVATED and "no version was active" in reasons[0]
    outcome, reasons = _decide(n_items=0)
    assert outcome == gate.NOT_EVALUATED and "the active v5" in reasons[0]


def test_a_failed_evaluation_keeps_the_candidate_and_says_why():
    outcome, reasons = _decide(failure="RuntimeError: boom")
    assert outcome == gate.NOT_EVALUATED and reasons == [
        "The evaluation on the held-out cells failed (RuntimeError: boom); the version stays a candidate."]
    new = gate.Scored(n_cells=40, overall_accuracy=0.9, vote=_vote(0.9, 0.9))
    outcome, reasons = _decide(new=new, failure="OSError: gone")
    assert outcome == gate.NOT_EVALUATED and "The active v5 could not be evaluated" in reasons[0] and "OSError: gone" in reasons[0]


def test_first_version_on_a_small_set_is_activated_with_a_warning():
    new = gate.Scored(n_cells=6, overall_accuracy=0.5, vote=_vote(0.5, 0.5))
    outcome, reasons = _decide(active=None, new=new, sample=SMALL)
    assert outcome == gate.FIRST and "overall accuracy 50.0%" in reasons[0]
    assert reasons[1].startswith("Held-out set too small to decide: 6 held-out cells have a final label, 20 are needed")


def test_better_activates_worse_stays_small_set_leaves_it_to_a_person():
    better, worse = gate.Scored(40, 0.9, _vote(0.9, 0.9)), gate.Scored(40, 0.6, _vote(0.9, 0.3))
    outcome, reasons = _decide(new=better, old=worse)
    assert outcome == gate.ACTIVATED and reasons[0].startswith("Not worse than the active v5 on the same 40")
    assert reasons[-1] == "No held-out cell was scored by both versions; no paired comparison."
    outcome, reasons = _decide(new=worse, old=better)
    assert outcome == gate.CANDIDATE and any("Beta" in r for r in reasons)
    outcome, reasons = _decide(new=better, old=worse, sample=SMALL)
    assert outcome == gate.TOO_SMALL and "v7 stays a candidate; a lab admin decides" in reasons[0]
