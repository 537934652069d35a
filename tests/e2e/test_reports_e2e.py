"""In headless Chromium with a real Celery worker: a lab admin trains the ensemble from the browser,
watches the progress bar, and reads the held-out evaluation report."""
import time

import pytest

from classifier.models import ModelVersion, TrainingRun
from reports.models import Evaluation, GateDecision
from tests.helpers import browser_login, screenshot
from tests.reports import factories


@pytest.mark.e2e
@pytest.mark.worker
@pytest.mark.slow
def test_admin_trains_watches_progress_and_reads_the_report(celery_worker_process, live_server, browser, lab_admin):
    cells = factories.synthetic_set(train_per_class=8, heldout_per_class=4)
    factories.store_cells(cells["train"], split="train", user=lab_admin)
    factories.store_cells(cells["heldout"], split="heldout", user=lab_admin)

    page = browser.new_page()
    browser_login(page, live_server, "admin1")
    page.goto(f"{live_server.url}/models/training/")
    page.select_option("select[name=ensemble]", "offline")
    page.select_option("select[name=mode]", "frozen")
    page.fill("input[name=epochs]", "5")
    page.click("form.training-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/models/training/*/")
    run = TrainingRun.objects.get()
    assert (run.ensemble, run.mode, run.epochs) == ("offline", "frozen", 5)

    # the page polls the JSON endpoint; collect what the progress box shows until the gate has decided
    seen_stages, seen_texts, shot = set(), set(), False
    deadline = time.time() + 300
    box = page.locator(".training-progress")
    while time.time() < deadline:
        stage = box.get_attribute("data-stage") or ""
        seen_stages.add(stage)
        seen_texts.add(page.locator(".js-text").inner_text())
        if stage in ("featurising", "training") and not shot:
            screenshot(page, "training-progress")
            shot = True
        if stage in ("done", "failed", "cancelled"):
            break
        time.sleep(0.25)
    run.refresh_from_db()
    assert run.status == "succeeded", f"{run.status}: {run.error}\n" + celery_worker_process.log_path.read_text()[-3000:]
    assert stage == "done", seen_stages
    assert seen_stages & {"featurising", "training", "evaluating"}, seen_stages
    assert any("Computing features" in t or "Training" in t for t in seen_texts), seen_texts
    assert int(float(page.locator(".js-bar").get_attribute("value") or 0)) == 100

    version = ModelVersion.objects.get()
    decision = GateDecision.objects.get(model_version=version)
    assert decision.outcome == GateDecision.Outcome.FIRST and version.status == "active"
    page.wait_for_selector(".js-report-link")
    screenshot(page, "training-done")
    page.click(".js-report-link")
    page.wait_for_url(f"{live_server.url}/reports/evaluations/*/")
    evaluation = Evaluation.objects.get(model_version=version)
    content = page.content()
    assert "Rows: predicted class. Columns: actual class" in content
    assert "Table I" in content and "k-NN (k=3)" in content
    assert f"{evaluation.overall_accuracy * 100:.1f}%" in content
    # the plots are real SVG images that the browser decoded
    widths = page.eval_on_selector_all("img.plot", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) >= 4 and all(w > 0 for w in widths)
    screenshot(page, "evaluation-report")
    page.goto(f"{live_server.url}/models/")
    assert page.locator(".badge-active").first.inner_text() == "active"
    page.close()
