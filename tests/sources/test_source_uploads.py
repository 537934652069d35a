"""Uploads (page, API, batch API, import_cells) and slides (page, API, their images) carry a source: the
one named, else the lab's default; an unknown or inactive one is a clear 400 and nothing is stored."""
import io
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotations.models import CellImage
from slides.models import Slide
from slides.services import slide_images_add
from sources.models import Source
from tests.factories import SourceFactory
from tests.helpers import png_bytes


def _named(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


@pytest.fixture
def scopes(db):
    return {"b": SourceFactory(name="Scope B"), "old": SourceFactory(name="Old scope", active=False)}


def test_api_upload_names_its_source_by_name_or_id_else_the_default(client, labeller, scopes):
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _named(png_bytes((1, 2, 3)), "a.png"), "acquisition_source": "scope b"})
    assert r.status_code == 201 and r.json()["acquisition_source"] == "Scope B"
    r = client.post("/api/images/", {"file": _named(png_bytes((1, 2, 4)), "b.png"),
                                     "acquisition_source": str(scopes["b"].pk)})
    assert r.status_code == 201 and r.json()["acquisition_source"] == "Scope B"
    r = client.post("/api/images/", {"file": _named(png_bytes((1, 2, 5)), "c.png")})
    assert r.status_code == 201 and r.json()["acquisition_source"] == "Default"
    assert client.get(f"/api/images/{r.json()['id']}/").json()["acquisition_source"] == "Default"


@pytest.mark.parametrize("value, what", [("Nowhere", "is unknown"), ("Old scope", "is inactive")])
def test_api_uploads_from_an_unknown_or_inactive_source_are_refused(client, labeller, scopes, value, what):
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _named(png_bytes(), "a.png"), "acquisition_source": value})
    assert r.status_code == 400 and what in r.json()["acquisition_source"][0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", png_bytes((9, 9, 9)))
    buf.seek(0)
    r = client.post("/api/batches/", {"file": buf, "acquisition_source": value})
    assert r.status_code == 400 and what in r.json()["acquisition_source"][0]
    assert not CellImage.objects.exists()


def test_batch_api_upload_carries_the_source(client, labeller, scopes):
    client.force_login(labeller)
    r = client.post("/api/batches/", {"files": [_named(png_bytes((3, 3, 3)), "a.png"), _named(png_bytes((4, 4, 4)), "b.png")],
                                      "acquisition_source": "Scope B"})
    assert r.status_code == 201 and r.json()["counts"]["stored"] == 2
    assert set(CellImage.objects.values_list("acquisition_source__name", flat=True)) == {"Scope B"}


def test_the_upload_page_offers_the_active_sources_and_refuses_another(client, labeller, scopes):
    client.force_login(labeller)
    page = client.get(reverse("annotations:upload")).content.decode()
    select = page.split('name="acquisition_source"')[1].split("</select>")[0]
    assert f'value="{scopes["b"].pk}">Scope B<' in select and "Old scope" not in select
    assert 'value="" selected>The default source (Default)<' in select
    r = client.post(reverse("annotations:upload"), {"files": _named(png_bytes((5, 5, 5)), "a.png"), "split": "train",
                                                     "acquisition_source": str(scopes["old"].pk)},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and "acquisition_source" in r.json()["error"]
    assert not CellImage.objects.exists()
    r = client.post(reverse("annotations:upload"), {"files": _named(png_bytes((5, 5, 5)), "a.png"), "split": "train",
                                                     "acquisition_source": str(scopes["b"].pk)},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and r.json()["counts"]["stored"] == 1
    assert CellImage.objects.get().acquisition_source == scopes["b"]


def test_import_cells_takes_a_source(tmp_path, labeller, scopes, demo_cells):
    import shutil

    root = tmp_path / "tree" / "monocyte"
    root.mkdir(parents=True)
    for f in sorted((demo_cells / "monocyte").iterdir())[:2]:
        shutil.copy(f, root / f.name)
    with pytest.raises(CommandError, match="is inactive"):
        call_command("import_cells", str(root.parent), "--labelled-by", "lab1", "--source", "Old scope", "--no-progress")
    assert not CellImage.objects.exists()
    call_command("import_cells", str(root.parent), "--labelled-by", "lab1", "--source", "Scope B", "--no-progress")
    assert list(CellImage.objects.values_list("acquisition_source__name", flat=True)) == ["Scope B", "Scope B"]


def test_a_slide_and_its_images_come_from_its_source(client, labeller, scopes):
    client.force_login(labeller)
    r = client.post("/api/slides/", {"code": "SRC-1", "kind": "cells", "acquisition_source": "Scope B"},
                    content_type="application/json")
    assert r.status_code == 201 and r.json()["acquisition_source"] == "Scope B"
    slide = Slide.objects.get(code="SRC-1")
    slide_images_add(slide=slide, files=[("a.png", png_bytes((7, 7, 7)))], uploaded_by=labeller)
    assert slide.cells.get().image.acquisition_source == scopes["b"]
    r = client.post("/api/slides/", {"code": "SRC-2", "acquisition_source": "Old scope"}, content_type="application/json")
    assert r.status_code == 400 and "is inactive" in r.json()["acquisition_source"][0]
    r = client.post("/api/slides/", {"code": "SRC-3"}, content_type="application/json")
    assert r.status_code == 201 and r.json()["acquisition_source"] == "Default"


def test_the_slide_page_creates_a_slide_from_a_source(client, labeller, scopes):
    client.force_login(labeller)
    r = client.post(reverse("slides:list"), {"code": "SRC-10", "kind": "fields", "target_count": 100,
                                             "acquisition_source": str(scopes["b"].pk)})
    assert r.status_code == 302
    slide = Slide.objects.get(code="SRC-10")
    assert slide.acquisition_source == scopes["b"]
    detail = client.get(reverse("slides:detail", args=[slide.pk])).content.decode()
    assert '<span id="slide-source">Scope B</span>' in detail
    r = client.post(reverse("slides:list"), {"code": "SRC-11", "kind": "fields", "target_count": 100,
                                             "acquisition_source": str(scopes["old"].pk)})
    assert r.status_code == 400 and 'id="error-acquisition_source"' in r.content.decode()
    assert not Slide.objects.filter(code="SRC-11").exists()
    assert Source.objects.get(is_default=True).slides.count() == 0
