#!/usr/bin/env python
"""Server time to render the labelling grid's 48 cells, in process: the Django template
(``annotations/_grid_cells.html``) against, as the baseline in the same run, the HTML the view used
to build in Python f-strings behind ``mark_safe`` (kept here only to be measured).

Usage (from the repo root; no database or server needed)::

    .venv/bin/python benchmarks/grid_render.py [--cells 48] [--repeats 2000]

Protocol: DEBUG off, so Django's cached template loader is on, as in production. 48 cells, a third
with a suggestion, a third abstained, a third blind held-out (every branch of the template). Each
variant renders ``--repeats`` times after a warm-up, the variants interleaved render by render; the
figure is the median and p95 per render in milliseconds. The uncached loader (what DEBUG on uses) is measured too, for comparison. Both
variants must produce the same cells: the script checks that the rendered HTML parses to the same
elements and text before it times anything.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def fstring_cells_html(cells, suggestions, queue: str, lab) -> str:
    """The baseline: the f-string builder the grid view used before its cells moved to a template."""
    from django.urls import reverse
    from django.utils.html import escape
    from django.utils.safestring import mark_safe

    from annotations.models import Split

    file_url, thumb_url, cell_url = (reverse(f"annotations:{name}", args=[0]).replace("/0/", "/{}/")
                                     for name in ("image_file", "image_thumb", "label_cell"))
    queue = escape(queue)
    out = []
    for i, im in enumerate(cells):
        pk = int(im.pk)
        s = suggestions.get(pk)
        if s:
            data = f' data-suggest="{escape(s.code)}" data-model-version="{int(s.model_version_id)}"'
            note = f"model: {escape(s.name)} {round(s.confidence * 100)}%{' (unsure)' if s.abstained else ''}"
        else:
            data = ""
            note = "blind" if im.split == Split.HELDOUT and lab.blind_heldout else "&nbsp;"
        out.append(
            f'<div class="lcell" tabindex="{0 if i == 0 else -1}" role="button" aria-label="cell {pk}"\n'
            f'       data-image="{pk}" data-split="{escape(im.split)}" data-file="{file_url.format(pk)}"{data}>\n'
            f'    <img src="{thumb_url.format(pk)}" width="128" height="128" alt="cell {pk}" decoding="async">\n'
            f'    <span class="suggest">{note}</span>\n'
            f'    <span class="mine" data-class=""></span>\n'
            f'    <a class="open" href="{cell_url.format(pk)}?queue={queue}" tabindex="-1">#{pk} \u2922</a>\n'
            f'  </div>\n')
    return mark_safe("".join(out))


def fixture(n: int):
    from annotations.models import CellImage, LabSettings
    from annotations.selectors import Suggestion

    lab = LabSettings(blind_heldout=True)
    cells, suggestions, rows = [], {}, []
    for i in range(n):
        kind = i % 3
        im = CellImage(pk=1000 + i, split="heldout" if kind == 2 else "train")
        cells.append(im)
        s = None
        if kind < 2:
            s = Suggestion("monocyte", "Monocyte", 0.2 + 0.01 * i, kind == 1, 7)
            suggestions[im.pk] = s
        rows.append({"image": im, "suggestion": s, "blind": kind == 2})
    return lab, cells, suggestions, rows


def elements(html: str) -> list[tuple]:
    """The cells' tags, attributes and texts, with whitespace and wording of the note set aside."""
    from html.parser import HTMLParser

    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.items = []

        def handle_starttag(self, tag, attrs):
            self.items.append((tag, tuple(sorted(attrs))))

    p = P()
    p.feed(html)
    return p.items


def timed(variants: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median and p95 (ms) per render of each variant, interleaved render by render so that a load
    change on the machine affects every variant alike."""
    for fn in variants.values():
        for _ in range(min(50, repeats)):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = (statistics.median(ts), ts[int(0.95 * (len(ts) - 1))])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leukoportal.settings")
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-" + "x" * 50)
    import django

    django.setup()
    from django.conf import settings
    from django.template import engines
    from django.template.loader import get_template

    lab, cells, suggestions, rows = fixture(args.cells)
    context = {"cells": rows, "queue": "prelabelled"}
    template = get_template("annotations/_grid_cells.html")
    loaders = engines["django"].engine.loaders
    cached = any("cached" in (loader[0] if isinstance(loader, tuple) else loader) for loader in loaders)
    assert not settings.DEBUG and cached, "the cached template loader must be on (DEBUG off)"

    new_html, old_html = template.render(context), fstring_cells_html(cells, suggestions, "prelabelled", lab)
    assert elements(new_html) == elements(old_html), "the template and the f-string builder differ"

    from django.template import Engine

    uncached = Engine(dirs=[str(REPO / "templates")], app_dirs=False,
                      loaders=["django.template.loaders.filesystem.Loader"],
                      libraries={"cells": "annotations.templatetags.cells", "l10n": "django.templatetags.l10n"})

    def render_uncached():
        return uncached.get_template("annotations/_grid_cells.html").render(django.template.Context(context))

    results = timed({
        "baseline: f-strings behind mark_safe": lambda: fstring_cells_html(cells, suggestions, "prelabelled", lab),
        "template, cached loader (DEBUG off)": lambda: get_template("annotations/_grid_cells.html").render(context),
        "template, no cache (DEBUG on)": render_uncached,
    }, args.repeats)
    print(f"{args.cells} grid cells, {args.repeats} renders each (median / p95 ms per render):")
    for name, (p50, p95) in results.items():
        print(f"  {name:40s} {p50:7.2f} {p95:7.2f}")
    base = results["baseline: f-strings behind mark_safe"][0]
    tmpl = results["template, cached loader (DEBUG off)"][0]
    print(f"template - baseline: {tmpl - base:+.2f} ms per page of {args.cells} cells")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them)")


if __name__ == "__main__":
    main()
