"""The LIS interface's pages and API: lab admins only; destinations audited, their token never shown;
bad input refused with nothing stored; the monitor, the slide page and the lab admins' home page show
what was not delivered; the operations are in the OpenAPI schema."""
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from annotations.models import AuditEvent
from lis.models import Destination, OutboxMessage
from tests.lis.conftest import mllp_destination, signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def test_a_lab_admin_adds_and_changes_destinations_over_the_api_audited_and_the_token_stays_secret(api, lab_admin):
    api.force_authenticate(lab_admin)
    r = api.post("/api/lis/destinations/create/", {"name": "Hospital FHIR", "kind": "fhir",
                                                  "base_url": "https://fhir.example.org/r4", "bearer_token": "t0ken"},
                 format="json")
    assert r.status_code == 201, r.content
    assert r.json()["bearer_token_set"] is True and "t0ken" not in r.content.decode()
    pk = r.json()["id"]
    r = api.patch(f"/api/lis/destinations/{pk}/", {"active": False, "bearer_token": ""}, format="json")
    assert r.status_code == 200 and r.json()["active"] is False
    destination = Destination.objects.get(pk=pk)
    assert destination.bearer_token == "t0ken"  # blank keeps it
    events = list(AuditEvent.objects.filter(action__startswith="lis.destination").order_by("id"))
    assert [e.action for e in events] == ["lis.destination_create", "lis.destination_update"]
    assert events[0].after["bearer_token"] is True and "t0ken" not in str(events[0].after)
    assert events[1].before == {"active": True} and events[1].after == {"active": False}
    listed = api.get("/api/lis/destinations/").json()
    assert [d["name"] for d in listed] == ["Hospital FHIR"] and "bearer_token" not in listed[0]


@pytest.mark.parametrize("body, field", [
    ({"name": "LIS", "kind": "hl7_mllp", "host": "lis.example.org"}, "port"),
    ({"name": "LIS", "kind": "hl7_mllp", "port": 2575}, "host"),
    ({"name": "LIS", "kind": "fhir", "base_url": "ftp://x"}, "base_url"),
    ({"name": "LIS", "kind": "hl7_mllp", "host": "h", "port": 2575, "receiving_application": "X" * 25},
     "receiving_application"),
])
def test_bad_destinations_are_refused_naming_the_field_and_nothing_is_stored(api, lab_admin, body, field):
    api.force_authenticate(lab_admin)
    r = api.post("/api/lis/destinations/create/", body, format="json")
    assert r.status_code == 400 and field in r.content.decode(), r.content
    assert not Destination.objects.exists() and not AuditEvent.objects.filter(action__startswith="lis.").exists()


def test_only_lab_admins_reach_the_pages_and_the_api(client, api, reviewer, lab_admin):
    api.force_authenticate(reviewer)
    assert api.get("/api/lis/messages/").status_code == 403
    assert api.post("/api/lis/destinations/create/", {"name": "x", "kind": "fhir"}, format="json").status_code == 403
    client.force_login(reviewer)
    for url in ("/lis/", "/lis/destinations/"):
        assert client.get(url).status_code == 403
    client.force_login(lab_admin)
    assert client.get("/lis/").status_code == 200 and client.get("/lis/destinations/").status_code == 200


def test_the_page_adds_a_destination_and_the_api_lists_and_resends_messages(client, api, reviewer, lab_admin):
    client.force_login(lab_admin)
    r = client.post("/lis/destinations/", {"name": "Main LIS", "kind": "hl7_mllp", "host": "127.0.0.1",
                                           "port": "2575", "active": "on", "sending_application": "LEUKOPORTAL",
                                           "receiving_application": "LAB"})
    assert r.status_code == 302, r.content.decode()[:2000]
    slide = signed("WEB-0001", by=reviewer)
    message = OutboxMessage.objects.get()
    OutboxMessage.objects.filter(pk=message.pk).update(state="failed", answer_code="AR",
                                                       error="rejected by the LIS (AR): Unknown order WEB-0001")
    api.force_authenticate(lab_admin)
    rows = api.get("/api/lis/messages/?state=failed").json()
    assert [(m["accession"], m["answer_code"]) for m in rows] == [("WEB-0001", "AR")]
    assert "MSH|" in api.get(f"/api/lis/messages/{message.pk}/").json()["payload"]
    page = client.get("/lis/").content.decode()
    assert "Unknown order WEB-0001" in page and "1 message(s) failed" in page
    detail = client.get(f"/slides/{slide.pk}/").content.decode()
    assert 'id="lis-state">failed<' in detail and "Unknown order WEB-0001" in detail
    r = api.post(f"/api/lis/messages/{message.pk}/resend/")
    assert r.status_code == 200 and r.json()["state"] == "queued" and r.json()["control_id"] != message.control_id
    assert AuditEvent.objects.filter(action="lis.resend", actor=lab_admin).count() == 1
    assert 'id="lis-state">queued<' in client.get(f"/slides/{slide.pk}/").content.decode()


@override_settings(LIS_QUEUED_ALERT_S=0)
def test_the_home_page_warns_lab_admins_of_failed_or_long_queued_deliveries(client, reviewer, lab_admin):
    mllp_destination(2575)
    signed("WEB-0002", by=reviewer)
    client.force_login(lab_admin)
    assert "1 still unacknowledged" in client.get("/").content.decode()
    client.force_login(reviewer)
    assert 'id="lis-home-alert"' not in client.get("/").content.decode()


def test_the_lis_operations_are_in_the_openapi_schema(api, lab_admin):
    api.force_authenticate(lab_admin)
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/lis/destinations/", "/api/lis/destinations/create/", "/api/lis/destinations/{id}/",
                 "/api/lis/messages/", "/api/lis/messages/{id}/", "/api/lis/messages/{id}/resend/", "/api/lis/orders/"):
        assert path in schema["paths"], path


def test_the_environment_presets_destinations_and_updates_them_audited(settings):
    from lis import services as lis_services

    settings.LIS_MLLP_HOST, settings.LIS_MLLP_PORT, settings.LIS_RECEIVING_APPLICATION = "lis.example.org", 2575, "LAB"
    settings.LIS_FHIR_BASE_URL, settings.LIS_FHIR_TOKEN = "https://fhir.example.org/r4", "Zq9-secret"
    made = lis_services.destinations_preset_from_env()
    assert [(d.kind, d.preset) for d in made] == [("hl7_mllp", True), ("fhir", True)]
    assert made[0].host == "lis.example.org" and made[0].receiving_application == "LAB"
    assert lis_services.destinations_preset_from_env() and Destination.objects.count() == 2  # nothing new
    settings.LIS_MLLP_PORT = 2576
    lis_services.destinations_preset_from_env()
    assert Destination.objects.get(kind="hl7_mllp").port == 2576
    actions = list(AuditEvent.objects.filter(action__startswith="lis.destination").order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["lis.destination_create", "lis.destination_create", "lis.destination_update"]
    assert "Zq9-secret" not in str(list(AuditEvent.objects.values_list("after", flat=True)))


def test_the_edit_page_changes_a_destination_keeps_its_token_and_names_a_bad_field(client, lab_admin):
    destination = Destination.objects.create(name="FHIR LIS", kind="fhir", base_url="https://a.example.org/r4",
                                             bearer_token="keep-me")
    client.force_login(lab_admin)
    page = client.get(f"/lis/destinations/{destination.pk}/").content.decode()
    assert "keep-me" not in page and "https://a.example.org/r4" in page
    form = {"name": "FHIR LIS", "kind": "fhir", "base_url": "https://b.example.org/r4", "active": "on",
            "timeout_s": "5", "max_attempts": "3", "backoff_s": "1", "backoff_max_s": "60"}
    assert client.post(f"/lis/destinations/{destination.pk}/", form).status_code == 302
    destination.refresh_from_db()
    assert (destination.base_url, destination.bearer_token, destination.max_attempts) == (
        "https://b.example.org/r4", "keep-me", 3)
    r = client.post(f"/lis/destinations/{destination.pk}/", dict(form, base_url="not a url"))
    assert r.status_code == 400 and 'id="error-base_url"' in r.content.decode()
    destination.refresh_from_db()
    assert destination.base_url == "https://b.example.org/r4"
