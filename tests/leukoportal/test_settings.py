import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from leukoportal.env import env_bool, env_int

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_env_bool_is_strict(monkeypatch):
    monkeypatch.setenv("X_FLAG", "true")
    assert env_bool("X_FLAG", False) is True
    monkeypatch.setenv("X_FLAG", "off")
    assert env_bool("X_FLAG", True) is False
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env_bool("X_FLAG", False)


def test_env_int_is_strict(monkeypatch):
    monkeypatch.setenv("X_NUM", "12x")
    with pytest.raises(ImproperlyConfigured):
        env_int("X_NUM", 1)


def _load_settings(env):
    full = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='leukoportal.settings'; django.setup()"],
        cwd=REPO, env=full, capture_output=True, text=True,
    )


def test_secret_key_is_required_without_debug():
    result = _load_settings({"DEBUG": "false"})
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_bad_boolean_in_environment_stops_start_up():
    result = _load_settings({"DEBUG": "yes please", "SECRET_KEY": "x"})
    assert result.returncode != 0
    assert "not a boolean" in result.stderr


def test_production_settings_are_secure():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='leukoportal.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, s.SECURE_SSL_REDIRECT)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT")}
    env.update({"DEBUG": "false", "SECRET_KEY": "x" * 60})
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "True"]


def test_security_headers_on_pages(client, db):
    response = client.get("/accounts/login/")
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_login_is_rate_limited(client, labeller, settings):
    for _ in range(settings.LOGIN_RATE_LIMIT):
        r = client.post("/accounts/login/", {"username": "lab1", "password": "wrong"})
        assert r.status_code == 200
    r = client.post("/accounts/login/", {"username": "lab1", "password": "a-long-test-password-42"})
    assert r.status_code == 429
    assert b"Too many failed attempts" in r.content


def test_database_outage_is_a_clean_503(client, labeller, monkeypatch):
    from django.db import OperationalError

    import annotations.api

    client.force_login(labeller)

    def broken(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(annotations.api.selectors, "images_list", broken)
    response = client.get("/api/images/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "database is unavailable" in response.json()["detail"]
