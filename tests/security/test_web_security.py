"""CSRF on every form and POST, session expiry, login rate limiting, password rules, audited admin
changes, security headers and `manage.py check --deploy` under production settings."""
import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from annotations.models import AuditEvent
from leukoportal.roles import has_role
from tests.helpers import PASSWORD, REPO
from tests.leukoportal.test_access_matrix import NEEDS_PARAMETERS, all_routes, fill


def _csrf_refused(response) -> bool:
    if response.status_code != 403:
        return False
    return b"CSRF" in response.content


# --- CSRF -----------------------------------------------------------------------------------
def test_every_post_without_a_csrf_token_is_refused(lab_admin, sample_pk):
    """A signed-in lab admin (who may do everything) posting without the token: 403 everywhere."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(lab_admin)
    failures, checked = [], 0
    for route, pattern, ns, name in all_routes():
        url = fill(route, sample_pk)
        # The API documentation views answer in HTML/YAML, whose 403 page does not print DRF's reason.
        documentation = route.startswith(("api/docs", "api/schema"))
        for method in ("post", "put", "patch", "delete"):
            response = getattr(client, method)(url, data={} if method == "post" else "")
            checked += 1
            if not (_csrf_refused(response) or (documentation and response.status_code == 403)):
                failures.append(f"{method.upper()} {url}: {response.status_code}")
    assert checked > 100
    assert not failures, "\n".join(failures)


def test_every_form_on_every_page_carries_a_csrf_token(lab_admin, sample_pk):
    client = Client()
    client.force_login(lab_admin)
    forms_seen, failures = 0, []
    for route, pattern, ns, name in all_routes():
        if name in NEEDS_PARAMETERS or ns == "admin" or route.startswith("api/"):
            continue
        url = fill(route, sample_pk)
        response = client.get(url)
        if response.status_code != 200 or not response.get("Content-Type", "").startswith("text/html"):
            continue
        html = response.content.decode()
        for form in re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I):
            if re.search(r"method\s*=\s*[\"']?post", form, flags=re.I):
                forms_seen += 1
                if "csrfmiddlewaretoken" not in form:
                    failures.append(url)
    assert forms_seen >= 3
    assert not failures, failures


def test_login_with_a_csrf_token_works_and_without_is_refused(labeller):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    assert _csrf_refused(client.post("/accounts/login/", {"username": "lab1", "password": PASSWORD}))
    r = client.post("/accounts/login/", {"username": "lab1", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert r.status_code == 302 and r["Location"] == "/"


def test_api_with_session_needs_csrf_but_token_auth_does_not(labeller):
    from rest_framework.authtoken.models import Token

    client = Client(enforce_csrf_checks=True)
    client.force_login(labeller)
    r = client.post("/api/labels/", {"image": 1, "cell_class": "lymphocyte"}, content_type="application/json")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    token = Token.objects.create(user=labeller)
    r = Client(enforce_csrf_checks=True).post("/api/labels/", {"image": 987654, "cell_class": "lymphocyte"},
                                              content_type="application/json", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert r.status_code == 404  # got past CSRF and authentication to the (missing) image


# --- Sessions, login, passwords ----------------------------------------------------------------
def test_session_expiry_settings(settings):
    assert 0 < settings.SESSION_COOKIE_AGE <= 12 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE is True
    assert settings.SESSION_COOKIE_HTTPONLY is True
    assert settings.API_TOKEN_TTL_HOURS <= 24 * 90


def test_an_expired_session_is_signed_out(client, labeller):
    client.force_login(labeller)
    assert client.get("/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    r = client.get("/")
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]
    assert client.get("/api/images/").status_code in (401, 403)


def test_login_rate_limit_blocks_even_the_right_password_and_spares_other_users(client, labeller, labeller2, settings):
    for _ in range(settings.LOGIN_RATE_LIMIT):
        assert client.post("/accounts/login/", {"username": "lab1", "password": "wrong-guess"}).status_code == 200
    r = client.post("/accounts/login/", {"username": "LAB1", "password": PASSWORD})
    assert r.status_code == 429
    assert "_auth_user_id" not in client.session
    r = client.post("/accounts/login/", {"username": "lab2", "password": PASSWORD})
    assert r.status_code == 302


@pytest.mark.parametrize("password", ["short1!", "password123", "1234567890123", "qwertyuiop", "iloveyou123", "administrator", "labeller-one"])
def test_weak_passwords_are_rejected(password, labeller):
    labeller.first_name = "labeller"
    labeller.email = "labeller-one@example.org"
    with pytest.raises(ValidationError):
        validate_password(password, user=labeller)


def test_a_strong_password_is_accepted(labeller):
    validate_password("tulip-Harbour-93-violet", user=labeller)


def test_admin_password_change_refuses_a_weak_password(client, lab_admin, labeller):
    client.force_login(lab_admin)
    url = f"/admin/auth/user/{labeller.pk}/password/"
    r = client.post(url, {"password1": "12345678", "password2": "12345678"})
    assert r.status_code == 200  # the form again, with errors
    labeller.refresh_from_db()
    assert labeller.check_password(PASSWORD)


# --- Audited admin ------------------------------------------------------------------------------
def test_admin_add_change_and_delete_are_audited(client, lab_admin):
    from django.contrib.auth.models import Group

    client.force_login(lab_admin)
    r = client.post("/admin/auth/group/add/", {"name": "night-shift"})
    assert r.status_code == 302, r.content[:500]
    group = Group.objects.get(name="night-shift")
    r = client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "day-shift"})
    assert r.status_code == 302
    r = client.post(f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302 and not Group.objects.filter(pk=group.pk).exists()
    events = AuditEvent.objects.filter(target_type="auth.Group", target_id=str(group.pk)).order_by("id")
    assert [e.action for e in events] == ["admin.add", "admin.change", "admin.delete"]
    assert all(e.actor == lab_admin for e in events)
    assert events[1].after["object"] == "day-shift"


def test_every_admin_model_writes_the_audit_trail():
    from django.contrib import admin

    from leukoportal.admin_site import AuditedAdminMixin

    registry = admin.site._registry  # noqa: SLF001 - the registered ModelAdmins
    assert registry
    assert all(isinstance(model_admin, AuditedAdminMixin) for model_admin in registry.values())


def test_only_staff_lab_admins_reach_the_admin(client, reviewer, lab_admin):
    client.force_login(reviewer)
    reviewer.is_staff = True
    reviewer.save()
    r = client.get("/admin/")
    assert r.status_code == 403 and b"The Django admin is for lab admins" in r.content
    assert Client().get("/admin/", follow=True).request["PATH_INFO"] == "/accounts/login/"  # anonymous: sign in
    client.force_login(lab_admin)
    assert client.get("/admin/").status_code == 200
    assert has_role(lab_admin, "lab_admin")


# --- Headers ------------------------------------------------------------------------------------
def test_security_headers_on_pages_api_errors_and_admin(client, labeller, lab_admin):
    client.force_login(labeller)
    responses = {"page": client.get("/"), "api": client.get("/api/images/"), "404": client.get("/no-such-page/"),
                 "403": client.get("/audit/"), "login": Client().get("/accounts/login/")}
    client.force_login(lab_admin)
    responses["admin"] = client.get("/admin/")
    for what, r in responses.items():
        csp = r["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, what
        if what != "admin":
            assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0], what
        assert r["X-Frame-Options"] == "DENY", what
        assert r["Referrer-Policy"] == "same-origin", what
        assert r["X-Content-Type-Options"] == "nosniff", what


def test_cookies_are_secure_and_httponly_in_production(client, labeller, settings):
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    r = client.post("/accounts/login/", {"username": "lab1", "password": PASSWORD})
    assert r.status_code == 302
    session = r.cookies[settings.SESSION_COOKIE_NAME]
    assert session["secure"] and session["httponly"] and session["samesite"].lower() in ("lax", "strict")
    r = client.get("/accounts/login/")
    assert r.cookies[settings.CSRF_COOKIE_NAME]["secure"]


def _production_env(**extra) -> dict:
    drop = ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(64), "ALLOWED_HOSTS": "lab.example.org"}, **extra)
    return env


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=_production_env(LEUKOPORTAL_VAR_DIR=str(tmp_path)), capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    issues = re.findall(r"^\?: \((\S+)\)", output, flags=re.M)
    # Django's deployment checks and the API schema's checks (drf_spectacular W001/W002): all clean.
    assert not issues, output
    assert "ERRORS:" not in output, output
    assert result.returncode == 0, output


def test_production_refuses_to_start_with_a_short_or_default_secret_key(tmp_path):
    env = _production_env(LEUKOPORTAL_VAR_DIR=str(tmp_path))
    env["SECRET_KEY"] = "short"
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--tag", "security"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "security.W009" in result.stdout + result.stderr
