"""Upgrading: a PostgreSQL database made by the previous release (tests/upgrade/fixtures: its own code
migrated it and loaded the demo data with its own commands, see scripts/make_upgrade_fixture.sh) is
migrated to this release with its data in it; and the production settings pass `check --deploy`."""
import gzip
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.helpers import REPO

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("release-*.sql.gz"))
COUNTED = ("auth_user", "annotations_cellimage", "annotations_label", "annotations_auditevent", "sources_source")


def _url(name: str) -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"


@pytest.fixture
def previous_release_database(db):
    """A scratch database holding the previous release's dump, dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_upgrade"
    with psycopg.connect(_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    sql = gzip.decompress(FIXTURES[-1].read_bytes()).decode()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", _url(name)], input=sql, text=True, check=True,
                   capture_output=True)
    yield _url(name)
    with psycopg.connect(_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}


def _manage(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


CHECK_LOGIN = """
import django
django.setup()
from django.contrib.auth import authenticate
from leukoportal.roles import role_of
user = authenticate(username="reviewer", password="upgrade-fixture-pass")
print(role_of(user))
"""


def test_the_previous_releases_database_migrates_with_its_data(previous_release_database, tmp_path):
    assert FIXTURES, "no database of a previous release: scripts/make_upgrade_fixture.sh makes one"
    before = _counts(previous_release_database)
    assert before["annotations_label"] > 100 and before["auth_user"] >= 4
    env = {**os.environ, "DATABASE_URL": previous_release_database, "LEUKOPORTAL_VAR_DIR": str(tmp_path / "var")}
    r = _manage("migrate", "--noinput", env=env)
    assert r.returncode == 0, r.stderr
    r = _manage("showmigrations", "--plan", env=env)
    assert "[ ]" not in r.stdout and "[X]  backup.0001_initial" in r.stdout and "[X]  accounts.0001_initial" in r.stdout
    assert _counts(previous_release_database) == before
    r = subprocess.run([sys.executable, "-c", CHECK_LOGIN], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**env, "DJANGO_SETTINGS_MODULE": "leukoportal.settings"})
    assert r.stdout.strip().splitlines()[-1] == "reviewer", r.stderr  # accounts and roles survive the upgrade
    r = _manage("makemigrations", "--check", "--dry-run", env=env)
    assert r.returncode == 0, r.stdout


def test_production_settings_pass_the_deployment_checks(tmp_path):
    """The variables of .env.example (a PostgreSQL and Redis deployment, nothing loosened): no warning."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "DEBUG", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS")}
    env.update(DATABASE_URL=_url("postgres"), SECRET_KEY=secrets.token_urlsafe(50), DEBUG="false",
               ALLOWED_HOSTS="leukoportal.example.org", LEUKOPORTAL_VAR_DIR=str(tmp_path / "var"),
               BACKUP_DIR=str(tmp_path / "backups"))
    r = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues" in r.stdout
