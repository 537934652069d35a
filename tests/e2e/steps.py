"""Steps on the slide verification screen that more than one browser test takes."""
from playwright.sync_api import expect

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
