"""What more than one browser test takes: the lab's users, a logged-in page, polling, and steps on
the slide verification screen."""
import time

from playwright.sync_api import expect

from tests.factories import UserFactory
from tests.helpers import logged_in_page

WIDE = {"width": 1366, "height": 900}


def users():
    """Two labellers, a reviewer and a lab admin, by user name."""
    return {name: UserFactory(username=name, role=role) for name, role in
            (("lab1", "labeller"), ("lab2", "labeller"), ("rev1", "reviewer"), ("admin1", "lab_admin"))}


def open_page(browser, live_server, username, viewport=WIDE):
    return logged_in_page(browser.new_context(viewport=viewport), live_server, username)


def poll(page, predicate, timeout=20.0, message="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {message}")

UNIDENTIFIED = "#group-unidentified .slide-cell"


def classify_the_unidentified_cells(page, key: str = "l") -> None:
    """Give each cell still waiting in the unidentified group the class of hotkey ``key``, one at a
    time (each must leave the group), then expect the sign button to be enabled."""
    while page.locator(UNIDENTIFIED).count():
        remaining = page.locator(UNIDENTIFIED).count()
        page.locator(UNIDENTIFIED).first.click(position={"x": 20, "y": 20})
        page.keyboard.press(key)
        expect(page.locator(UNIDENTIFIED)).to_have_count(remaining - 1)
    expect(page.locator("#sign-button")).to_be_enabled()


def pixel_digest(path) -> str:
    """What stays of an image through the de-identified upload (which re-encodes it): its pixels."""
    import hashlib

    from PIL import Image

    with Image.open(path) as im:
        return hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()


def slide_of_cells_made_in_the_browser(page, live_server, *, code: str, source: str, paths):
    """Create a slide of cropped cells from ``source`` on the slides page, upload ``paths`` and wait
    until the worker has processed it; the slide row."""
    from slides.models import Slide

    page.goto(f"{live_server.url}/slides/")
    page.fill("#slide-create input[name=code]", code)
    page.select_option("#slide-create select[name=kind]", "cells")
    page.select_option("#slide-create select[name=acquisition_source]", label=source)
    page.click("#slide-create button[type=submit]")
    page.wait_for_selector("#field-upload")
    expect(page.locator("#slide-source")).to_have_text(source)
    page.set_input_files("#field-files", [str(p) for p in paths])
    page.click("#field-upload-submit")
    page.wait_for_selector("#differential-table", timeout=180_000)  # the page refreshes itself while processing
    return Slide.objects.get(code=code)


def slide_truth_by_cell(slide, truth_by_digest: dict) -> dict:
    """The true class of each of the slide's cells (its id -> class code), found by its pixels."""
    from django.core.files.storage import default_storage

    return {cell.pk: truth_by_digest[pixel_digest(default_storage.path(cell.image.file.name))]
            for cell in slide.cells.select_related("image")}


def cell_group(page, cell_id: int) -> str:
    """The class group the verification screen shows the cell in ("unidentified": referred)."""
    return page.locator(f"#cell-{cell_id}").evaluate("c => c.closest('.class-group').dataset.class")


def verify_with_keys(page, answers: dict) -> None:
    """On the verification screen, give each cell of ``answers`` (cell id -> the key to press) its
    answer with the keyboard, as a reviewer does: the screen selects the next cell after each key; a
    cell that is not the selected one is clicked first. Each must come back verified."""
    for cell_id, key in answers.items():
        cell = page.locator(f"#cell-{cell_id}")
        if page.evaluate("() => document.activeElement && document.activeElement.dataset.cellId") != str(cell_id):
            cell.click(position={"x": 20, "y": 20})
        page.keyboard.press(key)
        expect(cell.locator(".verified-mark")).to_be_visible()


def source_named_in_the_browser(page, live_server, name: str, description: str):
    """On the sources page (already open): the lab admin names a new source; returns its row."""
    from sources.models import Source

    page.fill("#source-create input[name=name]", name)
    page.fill("#source-create input[name=description]", description)
    page.click("#source-create button[type=submit]")
    page.wait_for_url(f"{live_server.url}/sources/")
    return Source.objects.get(name=name)
