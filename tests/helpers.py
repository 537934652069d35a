"""What the tests share that is not a row or a fixture: paths, image bytes, polling, browser steps.

Django-free, so the pure tests (slides_detection, run without pytest-django) and the fault stack
(also run by benchmarks/) may import it.
"""
import io
import os
import time
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LEUKO_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO_CELLS = REPO / "demo" / "cells"
DEMO_FIELDS = REPO / "demo" / "fields"
PASSWORD = "a-long-test-password-42"
SCREENSHOTS = REPO / "test-output" / "screenshots"


def png_bytes(color=(200, 100, 150), size=(64, 64), **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG", **save_kwargs)
    return buf.getvalue()


def jpeg_bytes(color=(200, 100, 150), size=(64, 64), **save_kwargs) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    # some texture so that JPEG encodes real data
    for x in range(0, size[0], 4):
        img.putpixel((x, x % size[1]), (x % 255, 20, 90))
    img.save(buf, format="JPEG", quality=92, **save_kwargs)
    return buf.getvalue()


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def field_paths(n=2) -> list[Path]:
    """The first ``n`` demo smear fields."""
    return sorted(DEMO_FIELDS.glob("*.jpg"))[:n]


def pbc_split():
    """The demo's PBC cells: four of five per class train, every fifth is held out (in-domain)."""
    train, held = [], []
    for folder in sorted(p for p in DEMO_CELLS.iterdir() if p.is_dir()):
        for i, path in enumerate(sorted(folder.iterdir())):
            (held if i % 5 == 0 else train).append((path, folder.name))
    return train, held


def wait_for(predicate, timeout=60.0, interval=0.2, message="condition", error=AssertionError):
    """Poll ``predicate`` until it returns something true, and return that; raise ``error`` after
    ``timeout`` seconds (a generous deadline, not a figure)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise error(f"timed out after {timeout}s waiting for {message}")


def screenshot(page, name: str) -> Path:
    """Keep a screenshot of a main page under test-output/ for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def browser_login(page, live_server, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def logged_in_page(opener, live_server, username: str, **page_options):
    """A new page of ``opener`` (a browser or a browser context) logged in as ``username``; the
    page's uncaught script errors (CSP refusals included) collect in ``page.js_errors``."""
    page = opener.new_page(**page_options)
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    browser_login(page, live_server, username)
    return page


_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class RenderedElement:
    """One element of a rendered page: its tag, its attributes and its text (whitespace collapsed)."""

    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self._parts = tag, attrs, []

    @property
    def text(self) -> str:
        return " ".join("".join(self._parts).split())

    def __getitem__(self, name: str) -> str | None:
        return self.attrs[name]


class _Finder(HTMLParser):
    """The elements whose attribute ``attr`` is ``value`` (an element inside a found one is not
    looked at again)."""

    def __init__(self, attr: str, value: str):
        super().__init__(convert_charrefs=True)
        self.attr, self.value, self.found, self.depth = attr, value, [], 0

    def handle_starttag(self, tag, attrs):
        void = tag in _VOID_TAGS
        if self.depth:
            self.depth += 0 if void else 1
        elif dict(attrs).get(self.attr) == self.value:
            self.found.append(RenderedElement(tag, dict(attrs)))
            self.depth = 0 if void else 1

    def handle_endtag(self, tag):
        if self.depth and tag not in _VOID_TAGS:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.found[-1]._parts.append(data)


def rendered_elements(html: str, attr: str, value: str) -> list[RenderedElement]:
    """Each element of ``html`` whose attribute ``attr`` is ``value``: for assertions on what a page
    shows rather than on text anywhere in its HTML (where a CSRF token may hold any digits)."""
    finder = _Finder(attr, value)
    finder.feed(html)
    return finder.found


def rendered_texts(html: str, attr: str, value: str) -> list[str]:
    """The text of each element whose ``attr`` is ``value``, e.g. ``rendered_texts(page, "data-pct-for", "blast")``."""
    return [element.text for element in rendered_elements(html, attr, value)]


def html_element(html: str, element_id: str) -> RenderedElement | None:
    """The element of ``html`` whose id is ``element_id``, or None."""
    found = rendered_elements(html, "id", element_id)
    return found[0] if found else None


class _SelectOptions(HTMLParser):
    def __init__(self, attr: str, value: str):
        super().__init__()
        self.attr, self.value, self.inside, self.option, self.options = attr, value, False, None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "select":
            self.inside = a.get(self.attr) == self.value
        elif tag == "option" and self.inside:
            self.option = {"value": a.get("value"), "text": "", "selected": "selected" in a,
                           "disabled": "disabled" in a, "attrs": a}
            self.options.append(self.option)

    def handle_endtag(self, tag):
        if tag == "select":
            self.inside = False
        if tag in ("option", "select"):
            self.option = None

    def handle_data(self, data):
        if self.option is not None:
            self.option["text"] += data


def rendered_options(html: str, attr: str, value: str) -> list[dict]:
    """The options (value, text, selected, disabled, attrs) of the <select> of ``html`` whose
    attribute ``attr`` is ``value``: what a form offers and preselects, read from the element."""
    parser = _SelectOptions(attr, value)
    parser.feed(html)
    return parser.options


def rendered_attrs(html: str, attr: str, value: str) -> list[dict]:
    """The attributes of each element of ``html`` whose attribute ``attr`` is ``value``."""
    return [element.attrs for element in rendered_elements(html, attr, value)]
