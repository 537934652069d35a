"""Review integrity and change control in headless Chromium: the blind held-out set on the review
and cell pages, the evaluation report at 1366 px (vote worse than a backbone, paired comparison,
confusion matrix inside its card), promotion and rollback with a confirmation and a reason, the audit
log filter, the lab admin's menu on one line, error pages, the training page following its run,
the verification screen's keys and its model-agreement line, and the agreement-over-time page."""
import random

import pytest
from django.utils import timezone

from annotations import services as annotation_services
from annotations.models import CellClass
from classifier.models import Prediction, TrainingRun
from reports import metrics
from reports.models import Evaluation, GateDecision
from tests.e2e.steps import open_page, poll, users
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory, cell_class
from tests.helpers import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]






# --- The blind held-out set -------------------------------------------------------------------
def test_heldout_cell_is_adjudicated_blind_and_labellers_see_only_their_reading(browser, live_server):
    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now(),
                                  classes=["monocyte", "lymphocyte"])
    held = CellImageFactory(uploaded_by=u["admin1"], split="heldout")
    train = CellImageFactory(uploaded_by=u["admin1"])
    PredictionFactory(image=held, model_version=version, top_class="monocyte", confidence=0.81)
    PredictionFactory(image=train, model_version=version, top_class="eosinophil", confidence=0.41, abstained=True)
    annotation_services.label_submit(image=held, labeller=u["lab1"], cell_class=cell_class("monocyte"))
    annotation_services.label_submit(image=held, labeller=u["lab2"], cell_class=cell_class("lymphocyte"))
    annotation_services.label_submit(image=train, labeller=u["lab1"], cell_class=cell_class("eosinophil"), unsure=True)

    reviewer = open_page(browser, live_server, "rev1")
    reviewer.goto(f"{live_server.url}/review/")
    held_row = reviewer.locator(f"tr[data-image='{held.pk}']")
    assert "blind" in held_row.locator("td.model-call").inner_text()
    assert "81" not in held_row.inner_text() and "Monocyte 81%" not in held_row.inner_text()
    train_call = reviewer.locator(f"tr[data-image='{train.pk}'] td.model-call").inner_text()
    assert train_call == "referred (best guess Eosinophil 41%) referred: low confidence"  # with its reason
    screenshot(reviewer, "review-blind-heldout")
    # the reviewer decides; only then does the cell's page show the model's call
    row = reviewer.locator(f"tr[data-image='{held.pk}']")
    row.locator("select[name=cell_class]").select_option("lymphocyte")
    row.locator("button[type=submit]").click()
    reviewer.wait_for_selector(f"text=Cell {held.pk} is final")
    reviewer.goto(f"{live_server.url}/images/{held.pk}/")
    assert "Monocyte 81%" in reviewer.inner_text("main")

    labeller = open_page(browser, live_server, "lab2")
    second = CellImageFactory(uploaded_by=u["admin1"], split="heldout")
    PredictionFactory(image=second, model_version=version, top_class="monocyte", confidence=0.77)
    annotation_services.label_submit(image=second, labeller=u["lab1"], cell_class=cell_class("monocyte"))
    annotation_services.label_submit(image=second, labeller=u["lab2"], cell_class=cell_class("basophil"))
    labeller.goto(f"{live_server.url}/images/{second.pk}/")
    text = labeller.inner_text("main")
    assert "waiting for adjudication" not in text and "77%" not in text and "lab1" not in text
    assert "you see only your own reading" in text
    screenshot(labeller, "image-detail-labeller-blind")
    api = labeller.request.get(f"{live_server.url}/api/images/{second.pk}/")
    assert api.json()["needs_review"] is None
    assert not reviewer.js_errors and not labeller.js_errors


# --- Reports: the evaluation page at 1366 px --------------------------------------------------
def _results(classes, *, vote_right, backbone_right, seed):
    rng = random.Random(seed)
    actual = [c for c in classes for _ in range(5)]

    def guess(share):
        return [a if rng.random() < share else rng.choice(classes) for a in actual]

    vote, backbone = guess(vote_right), guess(backbone_right)
    cells = [[1000 + i, a, v, v, 0.8, 1, {"efficientnet_lite0": b}] for i, (a, v, b) in enumerate(zip(actual, vote, backbone))]
    vote_summary = metrics.summary(actual, vote, classes)
    backbone_summary = metrics.summary(actual, backbone, classes)
    return {
        "classes": classes, "backbones": ["efficientnet_lite0"], "vote": vote_summary,
        "per_backbone": {"efficientnet_lite0": backbone_summary},
        "ensemble_gain": vote_summary["overall_accuracy"] - backbone_summary["overall_accuracy"],
        "abstention": {"curve": [], "operating_point": {"threshold": 0.5, "min_agreement": 1, "source": "lab settings",
                                                         "referred": 0.1, "accuracy_accepted": 0.8, "accepted": 50}},
        "baselines": {"error": "not computed in this test"}, "cells": cells, "timing": {"seconds": 1.0},
    }


def _evaluation(version, results, snapshot_hash="same-cells"):
    return Evaluation.objects.create(model_version=version, status="succeeded", results=results, n_cells=len(results["cells"]),
                                     snapshot_hash=snapshot_hash, finished_at=timezone.now())


def test_evaluation_report_at_1366_px(browser, live_server):
    from reports.selectors import paired_comparison_of

    users()
    classes = list(CellClass.objects.filter(is_abstain=False).order_by("display_order").values_list("code", flat=True))
    old = ModelVersionFactory(status="active", activated_at=timezone.now(), classes=classes)
    new = ModelVersionFactory(status="candidate", classes=classes)
    old_ev = _evaluation(old, _results(classes, vote_right=0.75, backbone_right=0.7, seed=1))
    new_ev = _evaluation(new, _results(classes, vote_right=0.7, backbone_right=0.85, seed=2))
    comparison = paired_comparison_of(new_ev, old_ev)
    GateDecision.objects.create(model_version=new, evaluation=new_ev, compared_with=old, compared_evaluation=old_ev,
                                outcome=GateDecision.Outcome.TOO_SMALL, comparison=comparison,
                                reasons=["Held-out set too small to decide: 60 held-out cells have a final label, "
                                         "200 are needed; fewer than 20 in 12 class(es)."])
    page = open_page(browser, live_server, "admin1")
    page.goto(f"{live_server.url}/reports/evaluations/{new_ev.pk}/")
    # the vote being worse than one of its own backbones is said at the top, before any card
    warning = page.locator("#vote-worse")
    assert "efficientnet_lite0" in warning.inner_text() and "less accurate" in warning.inner_text()
    first_card_top = page.locator("section.card").first.bounding_box()["y"]
    assert warning.bounding_box()["y"] < first_card_top
    gate = page.locator("section.gate")
    assert "held-out set too small to decide" in gate.inner_text()
    assert "McNemar" in page.inner_text("#paired-comparison")
    assert f"{100 * comparison['difference']:+.1f} points" in page.inner_text("#paired-comparison")
    # class names, not codes, in the tables
    table = page.locator("table.confusion").first
    headers = table.locator("thead th").all_inner_texts()
    assert "Neutrophil, segmented" in headers and "neutrophil_segmented" not in headers
    assert "Platelet" in headers
    # the confusion matrix stays inside its card at 1366 px: scroll to its last column if needed
    card = page.locator("section.card", has=table).first.bounding_box()
    box = page.locator(".table-scroll", has=table).first
    assert box.bounding_box()["x"] + box.bounding_box()["width"] <= card["x"] + card["width"] + 0.5
    box.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    platelet = table.locator("thead th", has_text="Platelet").bounding_box()
    visible = box.bounding_box()
    assert platelet["x"] + platelet["width"] <= visible["x"] + visible["width"] + 1
    box.evaluate("el => { el.scrollLeft = 0; }")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "evaluation-report-1366")
    page.goto(f"{live_server.url}/models/{new.pk}/promote/")
    assert "less accurate than its own backbone efficientnet_lite0" in page.inner_text("main")
    assert "McNemar" in page.inner_text("#paired-comparison")
    screenshot(page, "promote-confirm")
    assert not page.js_errors


# --- Change control ---------------------------------------------------------------------------
def test_rollback_and_forward_need_a_confirmation_and_a_reason_and_are_audited(browser, live_server):
    users()
    v1 = ModelVersionFactory(status="retired", activated_at=timezone.now())
    v2 = ModelVersionFactory(status="active", activated_at=timezone.now())
    page = open_page(browser, live_server, "admin1")
    page.goto(f"{live_server.url}/models/")
    page.click(f"text=Roll back to v{v1.pk}")
    page.wait_for_url(f"{live_server.url}/models/{v1.pk}/rollback/")
    assert page.inner_text("h1") == f"Roll back to v{v1.pk}?"
    page.check("input[name=confirm]")
    page.click("#switch-form button[type=submit]")  # no reason: the browser does not send the form
    page.wait_for_timeout(300)
    assert page.url.endswith(f"/models/{v1.pk}/rollback/")
    v1.refresh_from_db()
    assert v1.status == "retired"
    page.fill("textarea[name=reason]", "v2 misreads band neutrophils on the new stain")
    page.click("#switch-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/models/")
    v1.refresh_from_db()
    assert v1.status == "active"
    # going forward again is labelled as such, not as a rollback
    forward = page.locator(f"a:has-text('Activate v{v2.pk} (newer)')")
    assert forward.count() == 1 and page.locator(f"text=Roll back to v{v2.pk}").count() == 0
    screenshot(page, "model-versions-after-rollback")
    forward.click()
    assert page.inner_text("h1") == f"Activate v{v2.pk} (newer)?"
    page.fill("textarea[name=reason]", "stain fixed")
    page.check("input[name=confirm]")
    page.click("#switch-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/models/")
    v2.refresh_from_db()
    assert v2.status == "active"

    # the audit log finds both by a part of the action and shows the reason as a field
    page.goto(f"{live_server.url}/audit/")
    page.fill("#audit-filter input[name=action]", "model")
    page.fill("#audit-filter input[name=user]", "admin")
    page.click("#audit-filter button[type=submit]")
    rows = page.locator("#audit-events tbody tr")
    assert rows.count() == 2
    text = page.inner_text("#audit-events")
    assert "model.rollback" in text and "model.reactivate" in text
    assert "reason: v2 misreads band neutrophils on the new stain" in text and "{'" not in text
    screenshot(page, "audit-log-filter")
    page.fill("#audit-filter input[name=action]", "rollback")
    page.click("#audit-filter button[type=submit]")
    assert page.locator("#audit-events tbody tr").count() == 1
    assert not page.js_errors


# --- Navigation and error pages ---------------------------------------------------------------
def test_lab_admin_menu_is_one_line_at_1366_px_with_one_agreement_entry(browser, live_server):
    users()
    page = open_page(browser, live_server, "admin1")
    tops = page.eval_on_selector_all(".topbar > *, .topbar nav > *",
                                     "els => els.map(e => Math.round(e.getBoundingClientRect().top))")
    assert max(tops) - min(tops) <= 12, tops
    nav = page.locator(".topbar nav").inner_text()
    assert nav.count("Agreement") == 1 and "Expert agreement" not in nav
    page.click(".navmenu summary")
    items = page.locator(".navmenu-items a").all_inner_texts()
    assert items == ["Taxonomy", "Lab settings", "Reference intervals", "Sources", "LIS interface", "Sessions and sign-in",
                     "Audit log", "Export cells", "Import cells", "Export slides", "Django admin"]
    screenshot(page, "menu-lab-admin-1366")
    page.click("text=Agreement")
    page.wait_for_url(f"{live_server.url}/reports/agreement/")
    page.click("text=Between experts")
    page.wait_for_url(f"{live_server.url}/agreement/")
    assert not page.js_errors


def test_error_pages_are_in_the_site_layout(browser, live_server):
    users()
    page = open_page(browser, live_server, "lab1")
    response = page.goto(f"{live_server.url}/admin/")
    assert response.status == 403
    assert page.locator("header.topbar").count() == 1
    assert "The Django admin is for lab admins" in page.inner_text("#error-403")
    assert page.locator("input[name=password]").count() == 0
    screenshot(page, "error-403-admin")
    response = page.goto(f"{live_server.url}/audit/")
    assert response.status == 403 and "needs the lab_admin role" in page.inner_text("#error-403")
    response = page.goto(f"{live_server.url}/no-such-page/")
    assert response.status == 404 and "/no-such-page/" in page.inner_text("#error-404")
    screenshot(page, "error-404")
    page.click("text=Back to the start page")
    page.wait_for_url(f"{live_server.url}/")
    icon = page.request.get(f"{live_server.url}/favicon.ico")
    assert icon.status == 200 and icon.body()[:4] == b"\x00\x00\x01\x00"
    anonymous = browser.new_page()
    schema = anonymous.request.get(f"{live_server.url}/api/schema/")
    assert schema.status == 403 and schema.headers["content-type"] == "application/json"
    assert not page.js_errors


# --- The training page follows its run --------------------------------------------------------
def test_training_page_follows_queued_running_succeeded_without_reload(browser, live_server):
    u = users()
    run = TrainingRun.objects.create(ensemble="offline", mode="frozen", created_by=u["admin1"],
                                     progress={"stage": "queued"})
    page = open_page(browser, live_server, "admin1")
    page.goto(f"{live_server.url}/models/training/{run.pk}/")
    status = page.locator(".js-status")
    assert status.inner_text() == "queued" and page.locator(".js-cancel").is_visible()
    TrainingRun.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now(),
                                                 progress={"stage": "training", "backbone": "efficientnet_lite0",
                                                           "epoch": 2, "epochs": 5})
    poll(page, lambda: status.inner_text().startswith("running"), message="running")
    assert "Training efficientnet_lite0: epoch 2/5" in page.inner_text(".js-text")
    assert "queued" not in page.inner_text("main")
    # the library has finished, the run is not registered yet: the page keeps following it
    TrainingRun.objects.filter(pk=run.pk).update(progress={"stage": "done"})
    box = page.locator(".training-progress")
    poll(page, lambda: box.get_attribute("data-stage") == "saving", message="saving")
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    GateDecision.objects.create(model_version=version, outcome=GateDecision.Outcome.FIRST, reasons=["first"])
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", finished_at=timezone.now(), model_version=version,
                                                 progress={"stage": "done"})
    poll(page, lambda: status.inner_text() == "succeeded", message="succeeded")
    poll(page, lambda: not page.locator(".js-cancel").is_visible(), message="no cancel button")
    poll(page, lambda: page.locator(".js-bar").get_attribute("value") == "100", message="a full bar")
    assert not page.locator(".js-retry-form").is_visible()
    screenshot(page, "training-run-succeeded-live")
    assert not page.js_errors


# --- Slides: verification keys and the model-agreement line ------------------------------------
def test_verification_keys_and_model_agreement_counts_only_verified_cells(browser, live_server):
    from slides.models import Slide, SlideCell

    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    slide = Slide.objects.create(code="INT-0001", created_by=u["admin1"], kind="cells", status="ready",
                                 task_state="done", model_version=version)
    mono = CellClass.objects.get(code="monocyte")
    for image in CellImageFactory.create_batch(3, uploaded_by=u["admin1"]):
        SlideCell.objects.create(slide=slide, image=image, predicted_class="monocyte", top_class="monocyte",
                                 confidence=0.81, agreement=1, n_backbones=1, model_version=version, final_class=mono)
    page = open_page(browser, live_server, "rev1")
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    note = page.inner_text(".model-agreement")
    assert "of 3" not in note and "once cells are verified" in note
    assert "model: Monocyte 81%" in page.locator(".slide-cell .pre").first.inner_text()
    legend = page.inner_text(".verify-page main p.muted")
    assert "Enter" in legend and "+ or ⤢ opens the large view" in legend
    cell = page.locator(".slide-cell").first
    cell_id = cell.get_attribute("id")
    cell.click(position={"x": 20, "y": 20})
    page.keyboard.press("Delete")
    page.wait_for_selector(f"#group-not_counted #{cell_id}")
    assert "agreed with the expert for 1 of the 1 cells an expert has verified" in page.inner_text(".model-agreement")
    page.locator(f"#{cell_id}").click(position={"x": 20, "y": 20})
    page.keyboard.press("+")  # the large view (tests/e2e/test_cell_zoom_e2e.py); it classifies nothing
    page.wait_for_selector("#cell-zoom:not(.hidden)")
    page.keyboard.press("Escape")
    page.wait_for_selector("#cell-zoom.hidden", state="attached")
    assert page.locator(f"#group-not_counted #{cell_id}").count() == 1
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#group-monocyte #{cell_id}")
    screenshot(page, "slide-verify-keys")
    assert not page.js_errors


# --- Agreement over time ------------------------------------------------------------------------
def test_agreement_page_counts_untrained_cells_and_names_classes(browser, live_server):
    u = users()
    train = CellImageFactory.create_batch(4, uploaded_by=u["admin1"])
    held = CellImageFactory.create_batch(2, uploaded_by=u["admin1"], split="heldout")
    for image in train + held:
        annotation_services.label_submit(image=image, labeller=u["lab1"], cell_class=cell_class("monocyte"))
    for image in held:  # held-out cells need a second reading
        annotation_services.label_submit(image=image, labeller=u["lab2"], cell_class=cell_class("monocyte"))
    version = ModelVersionFactory(status="active", activated_at=timezone.now(),
                                  snapshot={"items": [[im.pk, im.sha256, "monocyte"] for im in train]})
    for image in train + held[:1]:
        Prediction.objects.create(image=image, model_version=version, label="monocyte", top_class="monocyte",
                                  confidence=0.9, agreement=1, n_backbones=1)
    Prediction.objects.create(image=held[1], model_version=version, label="lymphocyte", top_class="lymphocyte",
                              confidence=0.9, agreement=1, n_backbones=1)
    page = open_page(browser, live_server, "rev1")
    page.goto(f"{live_server.url}/reports/agreement/")
    assert "Only cells the model version never trained on are counted" in page.inner_text("#agreement-scope")
    by_version = page.inner_text("#agreement-by-version")
    assert "50.0%" in by_version and "n=2" in by_version and "Monocyte" in by_version
    assert "n=4" in page.inner_text("#agreement-trained")
    screenshot(page, "agreement-over-time")
    assert not page.js_errors
