"""The export page in headless Chromium: the zip downloads while the page stays and shows how far the
server has written it; the import page reads the download back and refuses a broken one with its line."""
import io
import zipfile

import pytest

from annotations.models import CellImage
from tests.annotations.lab_data import flush_cells, make_lab_data
from tests.factories import UserFactory
from tests.helpers import browser_login, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_lab_admin_exports_with_progress_and_imports_the_download_back(browser, live_server,
                                                                         tmp_path):
    users = {name: UserFactory(username=name, role=role) for name, role in
             (("lab1", "labeller"), ("lab2", "labeller"), ("rev1", "reviewer"), ("admin1", "lab_admin"))}
    make_lab_data(labeller=users["lab1"], labeller2=users["lab2"], reviewer=users["rev1"])
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    browser_login(page, live_server, "admin1")
    page.goto(f"{live_server.url}/export/cells/")
    page.check("input[name=include_names]")
    with page.expect_download() as download_info:
        page.click("#export-submit")
    download = download_info.value
    assert download.suggested_filename.startswith("leukoportal-cells-") and download.failure() is None
    path = tmp_path / "cells.zip"
    download.save_as(path)
    assert len([n for n in zipfile.ZipFile(path).namelist() if n.endswith(".png")]) == 4
    page.wait_for_selector("#export-progress:not(.hidden)")
    for _ in range(100):  # the page polls the server's progress every half second
        if page.inner_text("#export-progress-text").startswith("Done"):
            break
        page.wait_for_timeout(100)
    assert page.inner_text("#export-progress-text").startswith("Done: 7 files written")
    assert page.url == f"{live_server.url}/export/cells/"  # the page stayed
    assert page.eval_on_selector("#export-progress-bar", "b => [b.value, b.max]") == [7, 7]
    screenshot(page, "export-cells")

    flush_cells()
    page.goto(f"{live_server.url}/import/cells/")
    broken = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if not name.startswith("monocyte/"):
                dst.writestr(name, src.read(name))
    (tmp_path / "broken.zip").write_bytes(broken.getvalue())
    page.set_input_files("input[name=file]", str(tmp_path / "broken.zip"))
    page.click("#import-form button[type=submit]")
    problems = page.inner_text("#import-problems")
    assert "nothing was imported" in problems and "is not in the archive" in problems and "line " in problems
    assert CellImage.objects.count() == 0
    page.set_input_files("input[name=file]", str(path))
    page.click("#import-form button[type=submit]")
    summary = page.inner_text("#import-summary")
    assert "New cells\t4" in summary and "Readings imported\t7" in summary
    assert CellImage.objects.count() == 4
    screenshot(page, "import-cells-summary")
    assert not errors
