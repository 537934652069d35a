"""Sessions that end: the lab's idle timeout, logging a user out everywhere, and the login rate limit
counted in the shared cache (Redis) so that every web host sees the same count."""
import os
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from accounts.middleware import LAST_ACTIVITY
from accounts.models import AccessSettings
from annotations.models import AuditEvent
from tests.helpers import REPO

pytestmark = pytest.mark.django_db


def _age_session(client, seconds: float) -> None:
    session = client.session
    session[LAST_ACTIVITY] = time.time() - seconds
    session.save()


def test_a_session_idle_longer_than_the_labs_timeout_is_logged_out(client, labeller):
    client.force_login(labeller)
    assert client.get("/").status_code == 200
    _age_session(client, 14 * 60)  # the default is 15 minutes
    assert client.get("/").status_code == 200
    _age_session(client, 16 * 60)
    r = client.get("/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")
    assert client.get("/").status_code == 302  # logged out, not just redirected once
    assert "_auth_user_id" not in client.session


def test_the_timeout_is_the_labs_setting(client, labeller, lab_admin):
    client.force_login(lab_admin)
    r = client.post("/access/", {"idle_timeout_minutes": 5, "idle_warning_minutes": 1})
    assert r.status_code == 302
    event = AuditEvent.objects.get(action="settings.access")
    assert event.actor == lab_admin and event.before["idle_timeout_minutes"] == 15
    assert event.after["idle_timeout_minutes"] == 5
    client.force_login(labeller)
    _age_session(client, 6 * 60)
    assert client.get("/").status_code == 302


def test_a_warning_after_the_timeout_is_refused_and_nothing_changes(client, lab_admin):
    client.force_login(lab_admin)
    r = client.post("/access/", {"idle_timeout_minutes": 5, "idle_warning_minutes": 5})
    assert r.status_code == 400 and "The warning must come before the timeout." in r.content.decode()
    r = client.post("/api/access-settings/", {"idle_timeout_minutes": 1, "idle_warning_minutes": 1},
                    content_type="application/json")
    assert r.status_code == 400 and "idle_timeout_minutes" in r.json()
    assert AccessSettings.get().idle_timeout_minutes == 15
    assert not AuditEvent.objects.filter(action="settings.access").exists()


def test_background_polling_does_not_keep_a_session_alive(client, labeller):
    client.force_login(labeller)
    client.get("/")
    _age_session(client, 10 * 60)
    before = client.session[LAST_ACTIVITY]
    client.get("/api/sources/", headers={"Sec-Fetch-Mode": "cors"})  # a page's fetch
    assert client.session[LAST_ACTIVITY] == before
    client.post("/access/keepalive/")  # "Stay signed in"
    assert client.session[LAST_ACTIVITY] > before + 500


def test_the_page_carries_the_idle_warning_for_its_script(client, labeller):
    client.force_login(labeller)
    html = client.get("/").content.decode()
    assert 'data-idle-timeout="900"' in html and 'data-idle-warning="120"' in html
    assert "js/idle.js" in html


def test_a_lab_admin_logs_a_user_out_everywhere(client, labeller, lab_admin):
    from django.test import Client

    bench, office = Client(), Client()
    bench.force_login(labeller)
    office.force_login(labeller)
    Token.objects.create(user=labeller)
    assert bench.get("/").status_code == 200 and office.get("/").status_code == 200
    client.force_login(lab_admin)
    r = client.get("/access/")
    assert r.status_code == 200
    r = client.post(f"/access/users/{labeller.pk}/logout-everywhere/", follow=True)
    assert "logged out everywhere (2 session(s) ended, 1 API token(s) revoked)" in r.content.decode()
    assert bench.get("/").status_code == 302 and office.get("/").status_code == 302
    assert not Token.objects.filter(user=labeller).exists()
    event = AuditEvent.objects.get(action="sessions.end")
    assert event.actor == lab_admin and event.target_id == str(labeller.pk) and event.after == {"sessions": 2, "tokens": 1}
    assert client.get("/").status_code == 200  # the lab admin's own session stays


def test_logout_everywhere_is_for_lab_admins_only(client, labeller, reviewer):
    client.force_login(reviewer)
    assert client.post(f"/access/users/{labeller.pk}/logout-everywhere/").status_code == 403
    assert client.post(f"/api/users/{labeller.pk}/logout-everywhere/").status_code == 403
    assert client.get("/access/").status_code == 403
    assert not AuditEvent.objects.filter(action="sessions.end").exists()


def test_the_api_logs_a_user_out_everywhere(client, labeller, lab_admin):
    from django.test import Client

    other = Client()
    other.force_login(labeller)
    client.force_login(lab_admin)
    r = client.post(f"/api/users/{labeller.pk}/logout-everywhere/")
    assert r.status_code == 200 and r.json() == {"sessions": 1, "tokens": 0}
    assert other.get("/").status_code == 302


LOCKED_ELSEWHERE = r"""
import django
django.setup()
from django.test import Client
r = Client(REMOTE_ADDR="10.0.0.7").post("/accounts/login/", {"username": "lab1", "password": "wrong"})
print(r.status_code)
"""


@pytest.mark.skipif(not os.environ.get("CACHE_URL", "").startswith("redis"), reason="needs the shared cache (Redis)")
def test_the_login_rate_limit_is_shared_by_every_web_host(client, labeller):
    for _ in range(settings.LOGIN_RATE_LIMIT):
        assert client.post("/accounts/login/", {"username": "lab1", "password": "wrong"},
                           REMOTE_ADDR="10.0.0.7").status_code == 200
    assert client.post("/accounts/login/", {"username": "lab1", "password": "wrong"},
                       REMOTE_ADDR="10.0.0.7").status_code == 429
    keys = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).keys("*login-failures:10.0.0.7:lab1")
    assert len(keys) == 1
    # Another web host: its own process, the same CACHE_URL and database.
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    r = subprocess.run([sys.executable, "-c", LOCKED_ELSEWHERE], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DJANGO_SETTINGS_MODULE": "leukoportal.settings", "DATABASE_URL": url})
    assert r.stdout.strip().splitlines()[-1] == "429", r.stderr
