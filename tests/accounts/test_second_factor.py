"""The second factor (TOTP through django-otp), driven with a real TOTP generator (pyotp)."""
import time

import pyotp
import pytest
from django.test import Client
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import AccessSettings
from annotations.models import AuditEvent
from tests.helpers import html_element, rendered_texts

pytestmark = pytest.mark.django_db


@pytest.fixture
def required():
    AccessSettings.objects.update_or_create(pk=1, defaults={"require_otp_for_signers": True})


def _enrol(client) -> tuple[str, list[str]]:
    r = client.get("/access/otp/enrol/")
    assert r.status_code == 200
    html = r.content.decode()
    assert html_element(html, "otp-qr").attrs["src"].startswith("data:image/svg+xml;base64,")
    secret = html_element(html, "otp-secret").text
    r = client.post("/access/otp/enrol/", {"token": pyotp.TOTP(secret).now(), "next": "/"})
    assert r.status_code == 200
    return secret, rendered_texts(r.content.decode(), "class", "recovery-code")


def test_where_the_lab_requires_it_reviewers_enrol_before_anything_else(client, reviewer, labeller, required):
    client.force_login(labeller)
    assert client.get("/").status_code == 200  # labellers do not sign: not required
    client.force_login(reviewer)
    r = client.get("/slides/")
    assert r.status_code == 302 and r["Location"] == "/access/otp/enrol/?next=%2Fslides%2F"
    assert client.get("/api/sources/").status_code == 403
    r = client.post("/access/otp/enrol/", {"token": "000000"})
    assert r.status_code == 400 and "not right" in r.content.decode()
    assert not TOTPDevice.objects.filter(user=reviewer, confirmed=True).exists()
    time.sleep(1.1)  # django-otp throttles after a wrong code (1 s, doubling)
    secret, codes = _enrol(client)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get("/slides/").status_code == 200
    event = AuditEvent.objects.get(action="otp.enrol")
    assert event.actor == reviewer and secret not in str(event.after) and codes[0] not in str(event.after)


def test_an_enrolled_user_enters_a_code_at_every_sign_in(client, reviewer, required):
    client.force_login(reviewer)
    secret, codes = _enrol(client)
    other = Client()
    other.force_login(reviewer)
    r = other.get("/")
    assert r.status_code == 302 and r["Location"].startswith("/access/otp/verify/")
    assert other.post("/access/otp/verify/", {"token": "123456"}).status_code == 400
    time.sleep(1.1)  # django-otp throttles after a wrong code (1 s, doubling)
    r = other.post("/access/otp/verify/", {"token": pyotp.TOTP(secret).at(time.time() + 30), "next": "/slides/"})
    assert r.status_code == 302 and r["Location"] == "/slides/"
    assert other.get("/").status_code == 200


def test_a_recovery_code_signs_in_once(client, reviewer, required):
    client.force_login(reviewer)
    _, codes = _enrol(client)
    first, second = Client(), Client()
    first.force_login(reviewer)
    assert first.post("/access/otp/verify/", {"token": codes[0]}).status_code == 302
    assert first.get("/").status_code == 200
    second.force_login(reviewer)
    assert second.post("/access/otp/verify/", {"token": codes[0]}).status_code == 400
    assert StaticToken.objects.filter(device__user=reviewer).count() == 9
    assert AuditEvent.objects.get(action="otp.recovery_used").after == {"left": 9}


def test_a_lab_admin_removes_a_lost_second_factor(client, reviewer, lab_admin, required):
    client.force_login(reviewer)
    _enrol(client)
    admin = Client()
    admin.force_login(lab_admin)
    r = admin.get("/")  # a lab admin is a signer too
    assert r.status_code == 302 and "/access/otp/enrol/" in r["Location"]
    _enrol(admin)
    assert admin.post(f"/access/users/{reviewer.pk}/otp-reset/").status_code == 302
    assert not TOTPDevice.objects.filter(user=reviewer).exists()
    event = AuditEvent.objects.get(action="otp.reset")
    assert event.actor == lab_admin and event.target_id == str(reviewer.pk)
    fresh = Client()
    fresh.force_login(reviewer)
    assert "/access/otp/enrol/" in fresh.get("/")["Location"]


def test_requiring_the_second_factor_is_a_lab_admins_audited_setting(client, lab_admin, reviewer):
    client.force_login(reviewer)
    r = client.post("/api/access-settings/", {"idle_timeout_minutes": 15, "idle_warning_minutes": 2,
                                              "require_otp_for_signers": True}, content_type="application/json")
    assert r.status_code == 403
    client.force_login(lab_admin)
    r = client.post("/api/access-settings/", {"idle_timeout_minutes": 15, "idle_warning_minutes": 2,
                                              "require_otp_for_signers": True}, content_type="application/json")
    assert r.status_code == 200 and r.json()["require_otp_for_signers"] is True
    event = AuditEvent.objects.get(action="settings.access")
    assert event.before["require_otp_for_signers"] is False and event.after["require_otp_for_signers"] is True
