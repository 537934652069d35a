"""The per-source learning curve (reports.learning_curve): figures checked by hand on a small case
(tests.reports.factories.seed_learning_curve), on the agreement page and in the API."""
import pytest
from django.urls import reverse

from reports.learning_curve import source_learning_curves, sparkline_points
from tests.reports.factories import seed_learning_curve


@pytest.fixture
def seeded(db, lab_admin):
    return seed_learning_curve(user=lab_admin)


def _curve(curves, name):
    return next(c for c in curves if c["name"] == name)


def test_a_new_source_starts_referred_and_learns_version_after_version(seeded):
    scope = _curve(source_learning_curves(), "Scope B")
    v1, v2 = scope["rows"]
    assert (v1["model_version"], v2["model_version"]) == (seeded["v1"].pk, seeded["v2"].pk)
    assert {k: v1[k] for k in ("trained_on", "verified", "referred", "accepted", "accepted_right",
                               "referred_best_guess_right")} == {
        "trained_on": 0, "verified": 6, "referred": 6, "accepted": 0, "accepted_right": 0,
        "referred_best_guess_right": 3}
    assert v1["referred_share"] == 1.0 and v1["accepted_accuracy"] is None and v1["accepted_accuracy_ci"] is None
    assert v1["accepted_wrong_share"] == 0.0 and v1["best_guess_accuracy"] == 0.5


def test_the_cells_a_version_trained_on_and_unverified_cells_are_left_out(seeded):
    v2 = _curve(source_learning_curves(), "Scope B")["rows"][1]
    # c1-c4 (c5, c6 trained v2) + the verified slide cell; not the unverified one, not the unlabelled upload
    assert v2["trained_on"] == 2 and v2["verified"] == 5
    assert (v2["referred"], v2["referred_share"]) == (1, 0.2)
    assert (v2["accepted"], v2["accepted_right"], v2["accepted_accuracy"]) == (4, 3, 0.75)
    assert (v2["accepted_wrong"], v2["accepted_wrong_share"]) == (1, 0.2)
    assert (v2["referred_best_guess_right"], v2["best_guess_accuracy"]) == (1, 1.0)
    lo, hi = v2["accepted_accuracy_ci"]
    assert lo < 0.75 < hi


def test_each_source_counts_only_its_own_cells(seeded):
    curves = source_learning_curves()
    assert [c["name"] for c in curves] == ["Default", "Scope B"]  # the default first
    (home,) = _curve(curves, "Default")["rows"]
    assert (home["model_version"], home["verified"], home["accepted_accuracy"], home["referred_share"]) == (
        seeded["v2"].pk, 1, 1.0, 0.0)


def test_a_source_without_verified_cells_is_listed_empty(db):
    from tests.factories import SourceFactory

    SourceFactory(name="Fresh scope")
    assert _curve(source_learning_curves(), "Fresh scope")["rows"] == []


def test_sparkline_points_put_a_share_of_one_at_the_top():
    assert sparkline_points([1.0, 0.0], width=100, height=40, pad=4) == "4.0,4.0 96.0,36.0"
    assert sparkline_points([None, 0.5], width=100, height=40, pad=4) == "96.0,20.0"
    assert sparkline_points([0.25], width=100, height=40, pad=4) == "50.0,28.0"


def _elements(node, **attrs):
    """Every element under ``node`` (django.test.html's tree) whose attributes contain ``attrs``
    (``cls``: one of its classes)."""
    from django.test.html import Element

    cls = attrs.pop("cls", None)
    for child in node.children:
        if not isinstance(child, Element):
            continue
        have = dict(child.attributes)
        if all(have.get(k) == v for k, v in attrs.items()) and (cls is None or cls in (have.get("class") or "").split()):
            yield child
        yield from _elements(child, cls=cls, **attrs)


def _text(node) -> str:
    from django.test.html import Element

    parts = [_text(c) if isinstance(c, Element) else str(c) for c in node.children]
    return " ".join(" ".join(parts).split())


def test_the_agreement_page_shows_each_sources_curve(client, reviewer, seeded):
    from django.test.html import parse_html

    client.force_login(reviewer)
    response = client.get(reverse("reports:agreement"))
    assert response.status_code == 200
    (block,) = _elements(parse_html(response.content.decode()), id=f"source-curve-{seeded['scope'].pk}")
    rows = {dict(tr.attributes)["data-version"]: tr for tr in _elements(block, cls="learning-curve-row")}
    assert set(rows) == {str(seeded["v1"].pk), str(seeded["v2"].pk)}

    def cell(version, cls):
        (td,) = _elements(rows[str(version.pk)], cls=cls)
        return _text(td)

    v1, v2 = seeded["v1"], seeded["v2"]
    assert (cell(v2, "verified"), cell(v2, "trained-on")) == ("5", "2")
    assert cell(v2, "referred") == "20.0% 1"
    assert cell(v2, "accepted-accuracy").startswith("75.0% 3/4")
    assert cell(v2, "accepted-wrong") == "20.0% 1"
    assert cell(v2, "best-guess") == "100.0% 1/1"
    assert cell(v1, "accepted-accuracy").startswith("— 0/0")
    assert cell(v1, "best-guess") == "50.0% 3/6"
    # the plot: one point per version; the accuracy only where the version accepted calls
    (referred,) = _elements(block, cls="curve-referred")
    (accuracy,) = _elements(block, cls="curve-accuracy")
    assert len(dict(referred.attributes)["points"].split()) == 2
    assert len(dict(accuracy.attributes)["points"].split()) == 1
    assert (len(list(_elements(block, cls="dot-accuracy"))), len(list(_elements(block, cls="dot-referred")))) == (1, 2)


def test_the_api_gives_the_same_figures(client, reviewer, labeller, seeded):
    client.force_login(labeller)
    assert client.get(reverse("api_agreement_sources")).status_code == 403
    client.force_login(reviewer)
    body = client.get(reverse("api_agreement_sources")).json()
    scope = _curve(body["sources"], "Scope B")
    assert [(r["model_version"], r["verified"], r["referred_share"], r["accepted_accuracy"]) for r in scope["rows"]] == [
        (seeded["v1"].pk, 6, 1.0, None), (seeded["v2"].pk, 5, 0.2, 0.75)]
