"""The labelling portal in real headless Chromium: upload a zip, label with the keyboard alone,
a second blind reader disagrees, a reviewer adjudicates, a labeller cannot reach adjudication."""
import io
import zipfile

import pytest

from annotations.models import CellImage, Label, LabSettings
from tests.factories import UserFactory
from tests.helpers import DEMO_CELLS, browser_login, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

N_CELLS = 12


def demo_zip(tmp_path):
    files = []
    for folder in ("lymphocyte", "neutrophil_segmented", "monocyte", "eosinophil"):
        files += sorted((DEMO_CELLS / folder).glob("*.jpg"))[:3]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, path in enumerate(files[:N_CELLS]):
            zf.writestr(f"cells/{i:02d}_{path.name}", path.read_bytes())
    path = tmp_path / "cells.zip"
    path.write_bytes(buf.getvalue())
    return path


def new_page(browser, live_server, username):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    browser_login(page, live_server, username)
    page.js_errors = errors
    return page


def poll(page, expression: str, timeout: float = 20.0):
    """wait_for_function evaluates strings with eval(), which the portal's CSP forbids: poll instead."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.evaluate(expression):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {expression}")


def wait_saved(page):
    poll(page, "() => document.getElementById('label-grid').dataset.pending === '0'")


def all_thumbnails_loaded(page) -> bool:
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('.lcell img')).every(i => i.complete && i.naturalWidth > 0)"
    )


def test_upload_label_disagree_adjudicate_in_the_browser(browser, live_server, tmp_path):
    for name, role in (("lab1", "labeller"), ("lab2", "labeller"), ("rev1", "reviewer"), ("admin1", "lab_admin")):
        UserFactory(username=name, role=role)

    # A lab admin asks for two independent readings of training cells.
    admin = new_page(browser, live_server, "admin1")
    admin.goto(f"{live_server.url}/settings/labelling/")
    admin.fill("input[name=labels_required_train]", "2")
    screenshot(admin, "lab-settings")
    admin.click("#lab-settings button[type=submit]")
    admin.wait_for_selector("text=Labelling settings saved.")
    assert LabSettings.get().labels_required_train == 2

    # First labeller uploads a zip through the upload page.
    lab1 = new_page(browser, live_server, "lab1")
    lab1.goto(f"{live_server.url}/upload/")
    lab1.set_input_files("#upload-files", str(demo_zip(tmp_path)))
    lab1.click("#upload-submit")
    lab1.wait_for_selector("#summary:not(.hidden)", timeout=30000)
    assert f"{N_CELLS} stored" in lab1.inner_text("#summary-counts")
    assert f"{N_CELLS} stored" in lab1.inner_text("#file-progress")  # the zip's own line
    screenshot(lab1, "upload-summary")
    assert CellImage.objects.count() == N_CELLS

    # ... and labels a page of cells with the keyboard alone.
    lab1.goto(f"{live_server.url}/label/")
    assert lab1.inner_text(".queue-card[data-queue=unlabelled] .queue-count") == str(N_CELLS)
    lab1.goto(f"{live_server.url}/label/unlabelled/")
    assert lab1.locator(".lcell").count() == N_CELLS
    poll(lab1, "() => Array.from(document.querySelectorAll('.lcell img')).every(i => i.complete)")
    assert all_thumbnails_loaded(lab1)
    assert lab1.inner_text("#remaining") == str(N_CELLS) and lab1.inner_text("#done-count") == "0"
    lab1_keys = ["l", "n"] * (N_CELLS // 2)
    for key in lab1_keys:
        lab1.keyboard.press(key)
    wait_saved(lab1)
    assert lab1.inner_text("#done-count") == str(N_CELLS)
    assert lab1.inner_text("#remaining") == "0"
    assert lab1.inner_text(".queue-tabs a.current .queue-count") == "0"
    # Backspace undoes the last label, the class key puts it back; arrows move.
    lab1.keyboard.press("Backspace")
    wait_saved(lab1)
    assert lab1.inner_text("#done-count") == str(N_CELLS - 1)
    assert lab1.locator(".lcell").nth(N_CELLS - 1).get_attribute("data-mine") == ""
    lab1.keyboard.press("n")
    wait_saved(lab1)
    lab1.keyboard.press("ArrowLeft")
    lab1.keyboard.press("Shift+L")  # the same class, now "not sure"
    wait_saved(lab1)
    screenshot(lab1, "label-grid")
    current = {lb.image_id: (lb.cell_class.code, lb.unsure) for lb in Label.objects.filter(labeller__username="lab1", superseded_at__isnull=True)}
    assert len(current) == N_CELLS
    ids = list(lab1.locator(".lcell").evaluate_all("els => els.map(e => parseInt(e.dataset.image))"))
    expected = {"l": "lymphocyte", "n": "neutrophil_segmented"}
    assert [current[i][0] for i in ids] == [expected[k] for k in lab1_keys]
    assert current[ids[N_CELLS - 2]][1] is True and current[ids[0]][1] is False
    assert lab1.js_errors == []
    lab1.reload()
    assert lab1.locator(".lcell").count() == 0 and lab1.inner_text("#remaining") == "0"

    # The single-cell view with zoom.
    lab1.goto(f"{live_server.url}/label/cell/{ids[0]}/")
    lab1.click("#zoom-in")
    assert "scale" in lab1.get_attribute("#zoom-img", "style")
    screenshot(lab1, "label-cell")

    # A second labeller reads blind and disagrees on the first four cells, using multi-select for some.
    lab2 = new_page(browser, live_server, "lab2")
    lab2.goto(f"{live_server.url}/label/unlabelled/")
    # the cell lab1 marked "not sure" still waits for its second reading (the lab requires two), here as
    # well as in the 'unsure' queue: a first reader's "not sure" does not skip the second reader
    assert lab2.locator(".lcell").count() == N_CELLS
    assert lab2.locator(f".lcell[data-image='{ids[N_CELLS - 2]}']").count() == 1
    lab2.goto(f"{live_server.url}/label/unsure/")
    assert lab2.locator(f".lcell[data-image='{ids[N_CELLS - 2]}']").count() == 1
    lab2.goto(f"{live_server.url}/label/unlabelled/")
    assert lab2.locator(".lcell .mine:not(:empty)").count() == 0  # nobody else's labels are shown
    for key in ["n", "l", "n", "l"]:
        lab2.keyboard.press(key)
    lab2.keyboard.press("Shift+ArrowRight")
    lab2.keyboard.press("Shift+ArrowRight")
    assert lab2.locator(".lcell.selected").count() == 3
    lab2.keyboard.press("Escape")  # Escape clears a selection
    assert lab2.locator(".lcell.selected").count() == 0
    lab2.keyboard.press("ArrowLeft")
    lab2.keyboard.press("ArrowLeft")
    lab2.keyboard.press("Space")  # select cells 4 and 5 ...
    lab2.keyboard.press("ArrowRight")
    lab2.keyboard.press("Space")
    lab2.keyboard.press("n")  # ... and label them at once
    wait_saved(lab2)
    assert lab2.inner_text("#done-count") == "6"
    lab2.keyboard.press("ArrowRight")
    for key in lab1_keys[6:]:
        lab2.keyboard.press(key)
    wait_saved(lab2)
    assert lab2.inner_text("#done-count") == str(N_CELLS)
    assert lab2.js_errors == []
    waiting = set(CellImage.objects.filter(needs_review=True).values_list("id", flat=True))
    # lab1: l n l n l n | lab2: n l n l n n -> cells 0-4 disagree; cell 10, read twice, was marked "not sure" by lab1
    assert waiting == {ids[i] for i in (0, 1, 2, 3, 4, N_CELLS - 2)}
    assert CellImage.objects.filter(final_label__isnull=False).count() == N_CELLS - 6

    # A labeller cannot reach the adjudication page.
    response = lab2.goto(f"{live_server.url}/review/")
    assert response.status == 403

    # The reviewer sees the labels side by side and decides.
    rev = new_page(browser, live_server, "rev1")
    rev.goto(f"{live_server.url}/review/")
    first = rev.locator(f"tr[data-image='{ids[0]}']")
    assert first.locator(".side-by-side li").count() == 2
    assert "lab1" in first.inner_text() and "lab2" in first.inner_text()
    screenshot(rev, "review-queue")
    first.locator("select[name=cell_class]").select_option("lymphocyte")
    first.locator("button[type=submit]").click()
    rev.wait_for_selector("text=is final: Lymphocyte")
    assert rev.locator("tr[data-image]").count() == 5
    assert CellImage.objects.get(pk=ids[0]).final_label.code == "lymphocyte"

    rev.goto(f"{live_server.url}/agreement/")
    assert rev.locator("#pairs tbody tr").count() == 1
    assert "lab1" in rev.inner_text("#pairs") and rev.inner_text("#fleiss-kappa") != "undefined"
    screenshot(rev, "agreement")
    rev.goto(f"{live_server.url}/images/{ids[0]}/")
    assert "label.adjudicate" in rev.inner_text("body")
    screenshot(rev, "cell-history")
    assert rev.js_errors == []


def test_the_upload_page_says_a_training_image_uploaded_again_as_heldout_stays_in_training(browser, live_server):
    from annotations.services import image_upload

    admin_user = UserFactory(username="admin1", role="lab_admin")
    path = sorted((DEMO_CELLS / "monocyte").glob("*.jpg"))[0]
    train = image_upload(data=path.read_bytes(), uploaded_by=admin_user, enqueue_classification=False).image
    admin = new_page(browser, live_server, "admin1")
    admin.goto(f"{live_server.url}/upload/")
    admin.select_option("select[name=split]", "heldout")
    admin.set_input_files("#upload-files", str(path))
    admin.click("#upload-submit")
    admin.wait_for_selector("#summary:not(.hidden)", timeout=30000)
    cells = admin.locator("#summary-table tbody tr").first.locator("td").all_inner_texts()
    assert cells == [path.name, "duplicate",
                     f"duplicate of image {train.pk}: it stays in the training split, not added to the held-out "
                     "set (a lab admin moves an image between splits on its page)"]
    assert CellImage.objects.get().split == "train" and admin.js_errors == []
