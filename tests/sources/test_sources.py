"""Sources: the default made by the migration, the lab admin's audited writes, the page, the API and who
may use them."""
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from annotations.models import AuditEvent, CellImage
from slides.models import Slide
from sources import services
from sources.models import Source
from sources.selectors import source_resolve
from tests.factories import CellImageFactory, SourceFactory


def test_the_migration_made_one_default_source_that_rows_fall_back_to(db, lab_admin):
    (default,) = Source.objects.filter(is_default=True)
    assert default.active and default.name == "Default"
    image = CellImageFactory(uploaded_by=lab_admin)
    slide = Slide.objects.create(code="S-D", created_by=lab_admin)
    assert image.acquisition_source == default and slide.acquisition_source == default


def test_a_lab_admin_creates_renames_and_deactivates_a_source_audited(lab_admin):
    source = services.source_create(actor=lab_admin, name="  Olympus  BX43 ", description="x100 oil, camera A")
    assert (source.name, source.active, source.is_default, source.created_by) == ("Olympus BX43", True, False, lab_admin)
    services.source_update(actor=lab_admin, source=source, name="Olympus BX43 / cam B", active=False)
    source.refresh_from_db()
    assert (source.name, source.active) == ("Olympus BX43 / cam B", False)
    events = list(AuditEvent.objects.filter(target_type="Source", target_id=str(source.pk)).order_by("id"))
    assert [e.action for e in events] == ["source.create", "source.update"]
    assert events[1].before["name"] == "Olympus BX43" and events[1].after == {
        "name": "Olympus BX43 / cam B", "description": "x100 oil, camera A", "active": False, "is_default": False}
    # nothing changed: nothing written
    services.source_update(actor=lab_admin, source=source, name="Olympus BX43 / cam B")
    assert AuditEvent.objects.filter(target_type="Source").count() == 2


@pytest.mark.parametrize("name, message", [("", "Name the source"), ("default", "exists already"),
                                           ("42", "needs a letter"), ("x" * 61, "At most 60")])
def test_a_bad_or_taken_name_is_refused(lab_admin, name, message):
    with pytest.raises(ValidationError) as exc:
        services.source_create(actor=lab_admin, name=name)
    assert message in " ".join(exc.value.message_dict["name"])
    assert Source.objects.count() == 1


def test_the_default_moves_and_stays_active(lab_admin):
    old = Source.objects.get(is_default=True)
    new = SourceFactory(name="Scope B")
    with pytest.raises(ValidationError, match="stays active"):
        services.source_update(actor=lab_admin, source=old, active=False)
    services.source_update(actor=lab_admin, source=new, make_default=True)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.is_default, new.is_default) == (False, True)
    assert CellImageFactory(uploaded_by=lab_admin).acquisition_source == new
    services.source_update(actor=lab_admin, source=old, active=False)  # no longer the default
    assert not Source.objects.get(pk=old.pk).active
    with pytest.raises(ValidationError, match="stays active"):
        services.source_update(actor=lab_admin, source=old, make_default=True)


def test_only_a_lab_admin_writes_sources(reviewer):
    with pytest.raises(PermissionDenied):
        services.source_create(actor=reviewer, name="Scope C")
    assert not Source.objects.filter(name="Scope C").exists()


def test_resolve_takes_an_id_or_a_name_and_refuses_unknown_or_inactive(db):
    scope = SourceFactory(name="Scope B")
    old = SourceFactory(name="Old scope", active=False)
    assert source_resolve(value=str(scope.pk)) == scope and source_resolve(value="scope b") == scope
    assert source_resolve(value="").is_default and source_resolve(value=None).is_default
    for value, what in (("Nowhere", "is unknown"), ("999999", "is unknown"), (old.name, "is inactive")):
        with pytest.raises(ValidationError) as exc:
            source_resolve(value=value)
        (message,) = exc.value.message_dict["acquisition_source"]
        assert what in message and "active sources: Default, Scope B." in message


def test_the_sources_page_lists_adds_and_changes_sources(client, lab_admin):
    client.force_login(lab_admin)
    r = client.post(reverse("sources:list"), {"name": "Zeiss Axio", "description": "camera 2"})
    assert r.status_code == 302
    zeiss = Source.objects.get(name="Zeiss Axio")
    CellImageFactory(uploaded_by=lab_admin, acquisition_source=zeiss)
    page = client.get(reverse("sources:list")).content.decode()
    row = page.split(f'id="source-{zeiss.pk}"')[1].split("</tr>")[0]
    assert '<td class="source-name">Zeiss Axio</td>' in row and "<td>1</td>" in row  # one cell image
    r = client.post(reverse("sources:list"), {"name": "zeiss axio"})
    assert r.status_code == 400 and "exists already" in r.content.decode()
    r = client.post(reverse("sources:update", args=[zeiss.pk]), {"name": "Zeiss Axio 2", "description": ""})
    assert r.status_code == 302  # the box unticked: deactivated
    zeiss.refresh_from_db()
    assert (zeiss.name, zeiss.active) == ("Zeiss Axio 2", False)
    default = Source.objects.get(is_default=True)
    r = client.post(reverse("sources:update", args=[default.pk]), {"name": "Default"})
    assert r.status_code == 400 and "stays active" in r.content.decode()
    assert Source.objects.get(pk=default.pk).active


def test_the_sources_page_is_in_the_lab_admin_menu_only(client, lab_admin, reviewer):
    client.force_login(lab_admin)
    assert f'href="{reverse("sources:list")}"' in client.get("/").content.decode()
    client.force_login(reviewer)
    assert f'href="{reverse("sources:list")}"' not in client.get("/").content.decode()


def test_the_api_lists_creates_and_updates_sources(client, labeller, lab_admin):
    client.force_login(labeller)
    assert [s["name"] for s in client.get("/api/sources/").json()] == ["Default"]
    assert client.post("/api/sources/create/", {"name": "Scope B"}, content_type="application/json").status_code == 403
    client.force_login(lab_admin)
    r = client.post("/api/sources/create/", {"name": "Scope B"}, content_type="application/json")
    assert r.status_code == 201 and r.json()["name"] == "Scope B" and r.json()["is_default"] is False
    pk = r.json()["id"]
    r = client.post("/api/sources/create/", {"name": "SCOPE B"}, content_type="application/json")
    assert r.status_code == 400 and "exists already" in r.json()["name"][0]
    r = client.post(f"/api/sources/{pk}/", {"active": False}, content_type="application/json")
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["name"] == "Scope B"
    assert [s["name"] for s in client.get("/api/sources/?active=true").json()] == ["Default"]
    assert client.post("/api/sources/999999/", {"active": True}, content_type="application/json").status_code == 404


@pytest.mark.parametrize("url, role", [
    ("/sources/", "lab_admin"), ("/sources/{pk}/", "lab_admin"), ("/api/sources/", "labeller"),
    ("/api/sources/create/", "lab_admin"), ("/api/sources/{pk}/", "lab_admin"),
    ("/api/agreement/sources/", "reviewer")])
def test_the_source_urls_are_in_the_role_matrices(url, role):
    """The URL x role matrices (tests/leukoportal/test_access_matrix.py, tests/security/test_api_matrix.py)
    walk every route; these are among them, with the role they must ask for."""
    from tests.leukoportal.test_access_matrix import all_routes, fill, required_role

    found = {fill(route, 7): required_role(pattern, ns) for route, pattern, ns, _ in all_routes()}
    assert found[url.format(pk=7)] == role


def test_a_source_in_use_cannot_be_deleted(lab_admin):
    from django.db.models import ProtectedError

    scope = SourceFactory(name="Scope B")
    CellImageFactory(uploaded_by=lab_admin, acquisition_source=scope)
    with pytest.raises(ProtectedError):
        scope.delete()
    assert CellImage.objects.filter(acquisition_source=scope).count() == 1
