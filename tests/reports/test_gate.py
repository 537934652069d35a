"""The promotion gate on real evaluations of tiny trained ensembles."""
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage

from annotations.models import AuditEvent, CellImage, LabSettings
from classifier.models import ModelVersion
from classifier.selectors import threshold_applied
from classifier.services import ensemble_load
from classifier import services as classifier_services
from reports import metrics, services
from reports.models import Evaluation, GateDecision
from tests.reports import factories


def test_first_version_is_evaluated_and_activated(good_version):
    decision = services.model_version_evaluate_and_gate(model_version_id=good_version.pk)
    good_version.refresh_from_db()
    assert decision.outcome == GateDecision.Outcome.FIRST
    assert good_version.status == ModelVersion.Status.ACTIVE
    assert decision.evaluation.status == Evaluation.Status.SUCCEEDED
    assert decision.evaluation.n_cells == 12
    assert decision.evaluation.overall_accuracy == 1.0
    assert AuditEvent.objects.filter(action="model.gate", target_id=str(good_version.pk)).exists()
    assert AuditEvent.objects.filter(action="model.gate", target_id=str(good_version.pk)).exists()


@pytest.fixture
def small_gate(db):
    """The synthetic held-out set has 4 cells per class, 12 in all: let the gate decide on it."""
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(gate_min_heldout_per_class=4, gate_min_heldout_total=12)


def gate_in_turn(*versions):
    """Put each version through the gate in turn; the rows refreshed, the last decision returned."""
    decisions = [services.model_version_evaluate_and_gate(model_version_id=v.pk) for v in versions]
    for version in versions:
        version.refresh_from_db()
    return decisions[-1]


def test_gate_refuses_a_worse_version_and_keeps_the_active_one(good_version, bad_version, small_gate):
    decision = gate_in_turn(good_version, bad_version)
    assert decision.outcome == GateDecision.Outcome.CANDIDATE
    assert bad_version.status == ModelVersion.Status.CANDIDATE
    assert good_version.status == ModelVersion.Status.ACTIVE
    assert decision.compared_with_id == good_version.pk
    # the same frozen held-out snapshot on both sides
    assert decision.evaluation.snapshot_hash == decision.compared_evaluation.snapshot_hash
    assert decision.evaluation.overall_accuracy < decision.compared_evaluation.overall_accuracy
    assert any("Overall accuracy" in r for r in decision.reasons)
    assert any("Sensitivity for" in r for r in decision.reasons)


def test_gate_activates_a_version_that_is_not_worse(good_version, tiny_models, cells, lab_admin, small_gate):
    again = factories.register_version(tiny_models["good"], name="good-again", train_images=cells["train"])
    decision = gate_in_turn(good_version, again)
    assert decision.outcome == GateDecision.Outcome.ACTIVATED
    assert again.status == ModelVersion.Status.ACTIVE
    assert good_version.status == ModelVersion.Status.RETIRED
    # the active version's evaluation on the same snapshot was reused, not recomputed
    assert Evaluation.objects.filter(model_version=good_version).count() == 1
    # the paired comparison on the same cells is stored and stated
    assert decision.comparison["n"] == 12 and decision.comparison["new_only"] == decision.comparison["old_only"] == 0
    assert decision.comparison["mcnemar_p"] == pytest.approx(1.0)
    assert any("McNemar's exact test p = 1.000" in r for r in decision.reasons)


def test_gate_keeps_a_candidate_when_the_heldout_set_is_too_small_to_decide(good_version, tiny_models, cells,
                                                                            lab_admin):
    assert (LabSettings.get().gate_min_heldout_per_class, LabSettings.get().gate_min_heldout_total) == (20, 200)
    first = services.model_version_evaluate_and_gate(model_version_id=good_version.pk)
    assert first.outcome == GateDecision.Outcome.FIRST  # nothing to compare with: still activated, and said
    assert any("Held-out set too small to decide" in r and "rough estimate" in r for r in first.reasons)
    again = factories.register_version(tiny_models["good"], name="good-again", train_images=cells["train"])
    decision = services.model_version_evaluate_and_gate(model_version_id=again.pk)
    again.refresh_from_db()
    assert decision.outcome == GateDecision.Outcome.TOO_SMALL
    assert decision.get_outcome_display() == "Kept as a candidate (held-out set too small to decide)"
    assert again.status == ModelVersion.Status.CANDIDATE
    assert decision.reasons[0].startswith("Held-out set too small to decide: 12 held-out cells have a final label, "
                                          "200 are needed; fewer than 20 in 3 class(es): Eosinophil 4, Lymphocyte 4")
    assert decision.sample["total"] == 12 and decision.sample["short"] == {
        "eosinophil": 4, "lymphocyte": 4, "neutrophil_segmented": 4}
    assert decision.comparison["n"] == 12 and "mcnemar_p" in decision.comparison
    # a lab admin decides explicitly, with a reason
    classifier_services.model_version_promote(version=again, actor=lab_admin, reason="Checked 40 extra cells by hand.")
    again.refresh_from_db()
    assert again.status == ModelVersion.Status.ACTIVE
    event = AuditEvent.objects.get(action="model.promote", target_id=str(again.pk))
    assert event.actor == lab_admin and event.after["reason"] == "Checked 40 extra cells by hand."


def test_sensitivity_drop_beyond_the_margin_is_refused():
    old = metrics.summary(["a", "a", "b", "b"], ["a", "a", "b", "b"], ["a", "b"])
    new = metrics.summary(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    ok, reasons = metrics.promotion_check(new, old, margin=0.02)
    assert not ok and any("Sensitivity for a" in r for r in reasons)
    ok, reasons = metrics.promotion_check(old, old, margin=0.0)
    assert ok and reasons == []


def test_no_heldout_labels_activates_only_when_nothing_is_active(good_version, bad_version):
    CellImage.objects.filter(split="heldout").update(final_label=None)
    first = services.model_version_evaluate_and_gate(model_version_id=good_version.pk)
    assert first.outcome == GateDecision.Outcome.UNEVALUATED_ACTIVATED
    assert "could not evaluate" in first.reasons[0]
    second = services.model_version_evaluate_and_gate(model_version_id=bad_version.pk)
    bad_version.refresh_from_db()
    assert second.outcome == GateDecision.Outcome.NOT_EVALUATED
    assert bad_version.status == ModelVersion.Status.CANDIDATE


def test_evaluation_tables_equal_metrics_summary_for_the_same_predictions(good_version, bad_version, cells):
    ev = services.evaluation_run(model_version=bad_version, trigger="admin")
    # predict the same stored cells directly through the library, as evaluate_folder does
    model = ensemble_load(bad_version)
    paths = [Path(default_storage.path(img.file.name)) for img in cells["heldout"]]
    proba = model.predict_proba(paths)
    applied = threshold_applied(bad_version)
    preds = model.decide(proba, threshold=applied.value, min_agreement=applied.min_agreement)
    actual = [img.final_label.code for img in cells["heldout"]]
    labels = list(model.classes)
    expected = metrics.summary(actual, [p.top_class for p in preds], labels)
    vote = ev.results["vote"]
    assert vote["confusion_matrix"]["matrix"] == expected["confusion_matrix"]["matrix"]
    assert vote["overall_accuracy"] == pytest.approx(expected["overall_accuracy"])
    assert vote["kappa"] == pytest.approx(expected["kappa"])
    for code in labels:
        for key in ("sensitivity", "specificity", "accuracy", "misdiagnosis_rate", "support"):
            assert vote["per_class"][code][key] == pytest.approx(expected["per_class"][code][key])
    b = bad_version.backbones[0]
    top = [model.classes[i] for i in np.argmax(proba.per_backbone[b], axis=1)]
    assert ev.results["per_backbone"][b]["overall_accuracy"] == pytest.approx(
        metrics.summary(actual, top, labels)["overall_accuracy"])
    # Table II layout is the transpose of metrics' (rows actual) layout
    t2 = metrics.table_ii(vote["confusion_matrix"])
    assert t2["matrix"] == np.asarray(expected["confusion_matrix"]["matrix"]).T.tolist()


def test_baselines_and_abstention_curve_are_stored(good_version):
    LabSettings.objects.filter(pk=1).update(abstain_threshold=0.5)
    ev = services.evaluation_run(model_version=good_version, trigger="admin")
    models = ev.results["baselines"]["models"]
    assert set(models) == {"knn3", "svm", "logreg", "tree"}
    assert all(m["n"] == 12 for m in models.values())
    assert models["knn3"]["overall_accuracy"] > 0.9  # colours are easy for k-NN on colour histograms
    op = ev.results["abstention"]["operating_point"]
    assert op["threshold"] == 0.5 and op["source"] == "lab settings"
    assert ev.threshold == 0.5
    assert len(ev.results["abstention"]["curve"]) == 100


@pytest.mark.parametrize("lab_threshold", [0.0, 0.55, 0.999])
def test_the_operating_point_lies_on_the_abstention_curve_of_the_rule_applied(good_version, lab_threshold):
    """The curve applies the whole referral rule (agreement, the cells referred whatever their
    confidence): at the operating point's threshold it gives exactly the referrals and the accuracy
    the evaluation measured, and the plot draws the point on it."""
    from classifier.ml.voting import DEFAULT_THRESHOLD
    from reports.plots import abstention_series

    LabSettings.objects.filter(pk=1).update(abstain_threshold=lab_threshold)
    ab = services.evaluation_run(model_version=good_version, trigger="admin").results["abstention"]
    op = ab["operating_point"]
    assert op["threshold"] == (lab_threshold or DEFAULT_THRESHOLD) and op["min_agreement"] == 1
    at = [c for c in ab["curve"] if c["threshold"] == op["threshold"]]
    assert len(at) == 1 and at[0]["referred"] == pytest.approx(op["referred"])
    assert at[0]["accepted"] == op["accepted"] and at[0]["accuracy_accepted"] == op["accuracy_accepted"]
    series = abstention_series(ab["curve"], op)
    assert series["on_curve"] and series["point"]["threshold"] == op["threshold"]
    i = series["threshold"].index(op["threshold"])
    assert series["referred"][i] == pytest.approx(series["point"]["referred"])
    if lab_threshold == 0.999:  # nothing accepted: no accuracy, on the curve as on the point
        assert op["accuracy_accepted"] is None and np.isnan(series["accuracy_accepted"][i])


def test_an_evaluation_made_before_the_curve_applied_the_rule_does_not_draw_its_point_on_it():
    from reports.plots import abstention_plot, abstention_series

    curve = [{"threshold": 0.0, "accuracy_accepted": 0.8, "referred": 0.1, "accepted": 9},
             {"threshold": 0.5, "accuracy_accepted": 0.9, "referred": 0.2, "accepted": 8}]
    op = {"threshold": 0.5, "accuracy_accepted": 0.95, "referred": 0.3, "min_agreement": 2}  # OOD referrals too
    assert not abstention_series(curve, op)["on_curve"]
    assert b"re-run the evaluation" in abstention_plot(curve, op)


def test_explicit_promotion_and_rollback_are_audited_with_their_reason(good_version, bad_version, lab_admin):
    from django.core.exceptions import ValidationError

    services.model_version_evaluate_and_gate(model_version_id=good_version.pk)
    services.model_version_evaluate_and_gate(model_version_id=bad_version.pk)
    with pytest.raises(ValidationError, match="Say why"):
        classifier_services.model_version_promote(version=bad_version, actor=lab_admin, reason="  ")
    bad_version.refresh_from_db()
    assert bad_version.status == "candidate"
    classifier_services.model_version_promote(version=bad_version, actor=lab_admin, reason="trial on the new stain")
    bad_version.refresh_from_db()
    good_version.refresh_from_db()
    assert bad_version.status == "active" and good_version.status == "retired"
    assert AuditEvent.objects.filter(action="model.promote", target_id=str(bad_version.pk), actor=lab_admin).exists()
    with pytest.raises(ValidationError, match="Say why"):
        classifier_services.model_version_rollback(version=good_version, actor=lab_admin, reason="")
    classifier_services.model_version_rollback(version=good_version, actor=lab_admin, reason="bands misread")
    good_version.refresh_from_db()
    assert good_version.status == "active"
    event = AuditEvent.objects.get(action="model.rollback", target_id=str(good_version.pk))
    assert event.actor == lab_admin and event.before == {"active": bad_version.pk}
    assert event.after == {"active": good_version.pk, "reason": "bands misread"}
    # going forward again to the newer version is not called a rollback
    classifier_services.model_version_rollback(version=bad_version, actor=lab_admin, reason="stain fixed")
    event = AuditEvent.objects.get(action="model.reactivate", target_id=str(bad_version.pk))
    assert event.after == {"active": bad_version.pk, "reason": "stain fixed"}


def test_rollback_refuses_a_version_that_was_never_active(good_version, bad_version, lab_admin):
    from django.core.exceptions import ValidationError

    services.model_version_evaluate_and_gate(model_version_id=good_version.pk)
    with pytest.raises(ValidationError):
        classifier_services.model_version_rollback(version=bad_version, actor=lab_admin, reason="why not")
    with pytest.raises(ValidationError):
        classifier_services.model_version_promote(version=good_version, actor=lab_admin, reason="why not")  # already active
