"""A lab's model meets a new microscope, in headless Chromium with a real Celery worker and a real
trained model (EfficientNet-Lite0 with its ImageNet weights; no prediction is made up):

the lab's home cells (pbc-dev, four classes) are labelled cells of the default source, and the
portal's own training makes v1 from them; a lab admin names "Scope B", a second microscope whose
stain differs (pbc-dev cells the model never saw, hue +20 degrees and saturation x0.7:
benchmarks.shifts' "stain" lab). The first slide of Scope B's cropped cells is referred cell by cell,
each with the model's best guess; a reviewer verifies its 20 cells per class with the class keys; the
lab admin retrains in the browser and promotes the new version (no held-out cell: the gate leaves
the decision to the admin); the next slide of Scope B is mostly accepted, and right; the agreement
page draws Scope B's learning curve over both versions.
"""
import json
import re

import pytest
from playwright.sync_api import expect

from annotations.models import CellClass
from benchmarks.shifts import apply_domain
from classifier.ml.ensembles import ENSEMBLES
from classifier.models import ModelVersion, TrainingRun
from tests.e2e.steps import (cell_group, open_page, pixel_digest, slide_of_cells_made_in_the_browser,
                             slide_truth_by_cell, source_named_in_the_browser, users, verify_with_keys)
from tests.helpers import SHARED_DATA, screenshot, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CLASSES = {"eosinophil": "e", "lymphocyte": "l", "monocyte": "m", "neutrophil_segmented": "n"}  # class: its key
HOME, FIRST, NEXT = 60, 20, 20  # cells per class: the home cells, Scope B's first slide, its next slide
LITE0 = "efficientnet_lite0"
# The recipe the portal's retraining runs here (the worker reads it from its environment): two cached
# views and 224 px instead of eight and 320, for a 2-core machine.
RECIPE = {"views": ["id", "flip"], "input_size": 224}


def cells_of_pbc():
    """Per class, the pbc-dev cells in file order: the home cells, then the first slide's, then the next's."""
    root = SHARED_DATA / "pbc-dev"
    if not root.is_dir():
        pytest.skip("needs ../shared/data/pbc-dev")
    home, first, nxt = [], [], []
    for code in CLASSES:
        files = sorted((root / code).iterdir())
        home += [(p, code) for p in files[:HOME]]
        first += [(p, code) for p in files[HOME:HOME + FIRST]]
        nxt += [(p, code) for p in files[HOME + FIRST:HOME + FIRST + NEXT]]
    return home, first, nxt


def through_scope_b(cells, out):
    """The cells as Scope B shows them (PNG files), and their classes by pixels."""
    paths, truth = [], {}
    for path, code in cells:
        dst = out / f"{code}-{path.stem}.png"
        apply_domain(path, "stain").save(dst, format="PNG")
        paths.append(dst)
        truth[pixel_digest(dst)] = code
    return paths, truth


@pytest.fixture
def lite0_retraining(settings, monkeypatch):
    """The portal's retraining of EfficientNet-Lite0 alone with the small recipe, in this process and
    in the worker started after it: the training form offers Lite0 as an ensemble of its own (the
    worker resolves a backbone's name as a one-backbone ensemble)."""
    monkeypatch.setitem(ENSEMBLES, LITE0, [LITE0])
    settings.CLASSIFIER_TRAIN_OVERRIDES = RECIPE
    monkeypatch.setenv("CLASSIFIER_TRAIN_OVERRIDES", json.dumps(RECIPE))
    monkeypatch.setenv("CLASSIFIER_DEVICE", "cpu")


def test_a_new_microscope_is_referred_then_verified_and_the_retrained_model_reads_its_next_slide(
        lite0_retraining, celery_worker_process, reference_intervals, browser, live_server, tmp_path):
    from annotations.services import cells_import_tree
    from classifier.services import training_run_start

    u = users()
    home, first, nxt = cells_of_pbc()
    tree = tmp_path / "home"
    for path, code in home:
        (tree / code).mkdir(parents=True, exist_ok=True)
        (tree / code / path.name).symlink_to(path)
    cells_import_tree(root=tree, split="train", labelled_by=u["admin1"])
    run = training_run_start(user=u["admin1"], ensemble=LITE0)  # the lab's first model, by the portal
    v1 = wait_for(lambda: ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first(), timeout=240,
                  message="v1, trained by the worker on the home cells and activated by the gate")
    assert TrainingRun.objects.get(pk=run.pk).model_version_id == v1.pk and v1.backbones == [LITE0]
    assert len(v1.snapshot["items"]) == HOME * len(CLASSES)

    # A lab admin names the second microscope.
    admin = open_page(browser, live_server, "admin1")
    admin.goto(f"{live_server.url}/sources/")
    scope = source_named_in_the_browser(admin, live_server, "Scope B", "Second microscope, another stain batch")

    # Its first slide: every cell referred, each with the model's best guess.
    first_paths, first_truth = through_scope_b(first, tmp_path)
    rev = open_page(browser, live_server, "rev1")
    slide1 = slide_of_cells_made_in_the_browser(rev, live_server, code="SCB-0001", source="Scope B", paths=first_paths)
    assert slide1.acquisition_source_id == scope.pk and slide1.model_version_id == v1.pk
    truth1 = slide_truth_by_cell(slide1, first_truth)
    assert len(truth1) == FIRST * len(CLASSES)
    rev.goto(f"{live_server.url}/slides/{slide1.pk}/verify/")
    expect(rev.locator("#domain-banner")).to_be_visible()
    referred = rev.locator("#group-unidentified .slide-cell")
    expect(referred).to_have_count(len(truth1))
    names = dict(CellClass.objects.values_list("code", "name"))
    guesses_right, unlike = 0, 0
    for cell_id, code in truth1.items():
        card = rev.locator(f"#group-unidentified #cell-{cell_id}")
        guess = card.get_attribute("data-best-guess")
        assert guess in CLASSES
        expect(card.locator(".pre")).to_have_text(
            re.compile(rf"^model: referred \(best guess {names[guess]} \d+%\)$"))
        reason = card.locator(".reason").inner_text()
        assert reason.startswith("referred: ") and "a source the model was not trained on" in reason
        unlike += "unlike the training images" in reason
        guesses_right += guess == code
    screenshot(rev, "new-microscope-first-slide")
    # the out-of-distribution check agrees on nearly every cell (measured: 77 of 80); the aligned best
    # guess is right on most (measured: 61 of 80, class-balanced; 63 plainly aligned)
    assert unlike >= 0.9 * len(truth1), unlike
    assert guesses_right >= 0.6 * len(truth1), guesses_right

    # The reviewer verifies the 80 cells with the class keys.
    verify_with_keys(rev, {cell_id: CLASSES[code] for cell_id, code in truth1.items()})
    expect(referred).to_have_count(0)
    for code in CLASSES:
        expect(rev.locator(f"[data-count-for={code}]")).to_have_text(str(FIRST))
    assert not rev.js_errors

    # The lab admin retrains in the browser; the worker trains v2; the admin promotes it.
    admin.goto(f"{live_server.url}/models/training/")
    admin.select_option("select[name=ensemble]", LITE0)
    admin.select_option("select[name=mode]", "default")
    admin.click("form.training-form button[type=submit]")
    admin.wait_for_url(f"{live_server.url}/models/training/*/")
    expect(admin.locator(".training-progress")).to_have_attribute("data-status", "succeeded", timeout=240_000)
    expect(admin.locator(".js-gate")).to_contain_text("Promotion gate:", timeout=60_000)
    v2 = ModelVersion.objects.exclude(pk=v1.pk).get()
    assert v2.status == ModelVersion.Status.CANDIDATE  # no held-out cell: the gate leaves it to the admin
    trained = {row[0] for row in v2.snapshot["items"]}
    assert {c.image_id for c in slide1.cells.all()} <= trained and len(trained) == (HOME + FIRST) * len(CLASSES)
    admin.goto(f"{live_server.url}/models/")
    admin.click(f"a[href='/models/{v2.pk}/promote/']")
    admin.fill("textarea[name=reason]", "Retrained on Scope B's first verified slide")
    admin.check("input[name=confirm]")
    admin.click("form:has(textarea[name=reason]) button[type=submit]")
    admin.wait_for_url(f"{live_server.url}/models/")
    expect(admin.locator("body")).to_contain_text(f"v{v2.pk} is now the active model")
    v2.refresh_from_db()
    assert v2.status == ModelVersion.Status.ACTIVE

    # Scope B's next slide, read by v2: mostly accepted, and the accepted calls mostly right.
    next_paths, next_truth = through_scope_b(nxt, tmp_path)
    slide2 = slide_of_cells_made_in_the_browser(rev, live_server, code="SCB-0002", source="Scope B", paths=next_paths)
    assert slide2.model_version_id == v2.pk
    truth2 = slide_truth_by_cell(slide2, next_truth)
    rev.goto(f"{live_server.url}/slides/{slide2.pk}/verify/")
    shown = {cell_id: cell_group(rev, cell_id) for cell_id in truth2}
    accepted = {cell_id: group for cell_id, group in shown.items() if group != "unidentified"}
    right = sum(group == truth2[cell_id] for cell_id, group in accepted.items())
    print(f"\nScope B's next slide read by v{v2.pk}: {len(accepted)} of {len(truth2)} accepted, "
          f"{right} of them right; first slide: {unlike} unlike, best guess right on {guesses_right}")
    screenshot(rev, "new-microscope-next-slide")
    # measured: 52 of 80 accepted (65 %), 51 of them right (98 %)
    assert len(accepted) >= 0.5 * len(truth2), (len(accepted), len(truth2))
    assert right >= 0.9 * len(accepted), (right, len(accepted))

    # The reviewer verifies it too (Enter confirms a right call; a class key for the others).
    verify_with_keys(rev, {cell_id: "Enter" if accepted.get(cell_id) == code else CLASSES[code]
                           for cell_id, code in truth2.items()})
    assert not rev.js_errors

    # The agreement page: Scope B's learning curve over both versions.
    admin.goto(f"{live_server.url}/reports/agreement/")
    curve = admin.locator(f"#source-curve-{scope.pk}")
    curve.scroll_into_view_if_needed()
    row1, row2 = (curve.locator(f"tr[data-version='{v.pk}']") for v in (v1, v2))
    n1, n2 = len(truth1), len(truth2)
    assert [row1.locator(f".{c}").inner_text() for c in ("trained-on", "verified", "referred")] == [
        "0", str(n1), f"100.0% {n1}"]
    assert row1.locator(".best-guess").inner_text() == f"{100 * guesses_right / n1:.1f}% {guesses_right}/{n1}"
    assert [row2.locator(f".{c}").inner_text() for c in ("trained-on", "verified", "referred")] == [
        str(n1), str(n2), f"{100 * (n2 - len(accepted)) / n2:.1f}% {n2 - len(accepted)}"]
    assert row2.locator(".accepted-accuracy").inner_text().startswith(
        f"{100 * right / len(accepted):.1f}% {right}/{len(accepted)}")
    screenshot(admin, "new-microscope-learning-curve")
    assert not admin.js_errors
