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
