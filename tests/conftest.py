import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import redis

from tests.accounts.slapd import slapd_start, slapd_stop
from tests.helpers import DEMO_CELLS, REPO, pbc_split

# Django, the apps and tests.factories are imported inside the fixtures: the pure tests
# (tests/slides_detection) load this file without pytest-django.


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test databases, and at the end of the run: the test database is dropped only
    once no other session uses it. A worker process's session can outlive the process by a moment
    (waited for); an idle connection a finished thread of this run left open (a live-server request
    thread kept alive by the browser) is ended, as DROP DATABASE ... WITH (FORCE) would; a session
    still working is named in a warning instead of a bare "is being accessed by other users"."""
    yield
    with django_db_blocker.unblock():
        others = _end_other_test_db_sessions(wait_s=10.0)
    if others:
        warnings.warn("sessions still working on the test database at the end of the run: " + "; ".join(others))


def _end_other_test_db_sessions(*, wait_s: float) -> list[str]:
    import gc

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        return []
    query = ("SELECT pid, application_name, state, left(query, 80) FROM pg_stat_activity "
             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + wait_s
    with connection.cursor() as cursor:
        while True:
            gc.collect()  # closes psycopg connections of threads that ended without closing them
            cursor.execute(query)
            others = cursor.fetchall()
            if not others or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND state = 'idle'")
        cursor.execute(query + " AND state <> 'idle'")
        working = [f"backend {pid} ({app or 'no name'}, {state}: {q})" for pid, app, state, q in cursor.fetchall()]
    connections.close_all()
    return working


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MODEL_DIR = tmp_path / "models"
    settings.FEATURE_CACHE_DIR = tmp_path / "feature-cache"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only


def role_user(username: str, role: str | None):
    """A fixture: the user ``username`` in ``role`` (no role for None)."""

    @pytest.fixture
    def user(db):
        from tests.factories import UserFactory

        return UserFactory(username=username, role=role)

    return user


labeller = role_user("lab1", "labeller")
labeller2 = role_user("lab2", "labeller")
reviewer = role_user("rev1", "reviewer")
reviewer2 = role_user("rev2", "reviewer")
lab_admin = role_user("admin1", "lab_admin")
no_role_user = role_user("norole", None)


@pytest.fixture
def users_by_role(db, labeller, reviewer, lab_admin, no_role_user):
    """One user per role, plus one without a role and the anonymous visitor (None)."""
    return {"anonymous": None, "no_role": no_role_user, "labeller": labeller, "reviewer": reviewer,
            "lab_admin": lab_admin}


@pytest.fixture
def sample_pk(lab_admin):
    """The pk of one stored cell image, to fill the routes' ``<int:...>`` parts."""
    from tests.factories import CellImageFactory

    return CellImageFactory(uploaded_by=lab_admin).pk


@pytest.fixture
def demo_cells():
    return DEMO_CELLS


@pytest.fixture
def chromium_path():
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not shutil.which(path) and not Path(path).exists():
        pytest.fail(f"Chromium not found at {path}; `make test` installs Debian's chromium.")
    return path


@pytest.fixture(autouse=True)
def _reference_data(request):
    """Transactional tests start from a flushed database: put the migrations' reference data back."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
        from django.apps import apps

        from annotations.seed import seed

        seed(apps)


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


class BrokerQueues:
    """The test broker (Redis): what has been published to its queues, decoded."""

    QUEUES = ("default", "inference", "training")

    def __init__(self):
        from leukoportal.celery import app

        self.client = redis.Redis.from_url(app.conf.broker_url)

    def empty(self) -> None:
        for queue in self.QUEUES:
            for key in self.client.scan_iter(f"{queue}*"):  # the queue's list and its priority lists
                self.client.delete(key)

    def messages(self, queue: str) -> list[tuple[str, list]]:
        """(task name, args) of each message waiting in ``queue``, oldest first."""
        out = []
        for key in self.client.scan_iter(f"{queue}*"):
            for raw in reversed(self.client.lrange(key, 0, -1)):
                message = json.loads(raw)
                args = json.loads(base64.b64decode(message["body"]))[0]
                out.append((message["headers"]["task"], args))
        return out


@pytest.fixture
def broker():
    """The test broker's queues, emptied before and after the test."""
    from leukoportal import queueing

    queues = BrokerQueues()
    queues.empty()
    queueing._paused_until = 0.0  # a publish that failed in one test must not pause another's
    yield queues
    queueing._paused_until = 0.0
    queues.empty()


def _worker_env(settings) -> dict:
    from django.db import connection

    db = connection.settings_dict
    env = os.environ.copy()
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["MODEL_DIR"] = str(settings.MODEL_DIR)
    env["FEATURE_CACHE_DIR"] = str(settings.FEATURE_CACHE_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path):
    """A real Celery worker process on the test broker (Redis) and the test database."""
    from leukoportal.celery import app

    app.control.purge()
    log = tmp_path / "worker.log"
    queue_names = "default,inference,training"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "leukoportal", "worker", "-Q", queue_names, "-c", "1", "-P", "solo",
         "--without-mingle", "--without-gossip", "-l", "INFO", "-n", f"test-{os.getpid()}@%h"],
        cwd=REPO, env=_worker_env(settings), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if "ready" in log.read_text():
            break
        if proc.poll() is not None:
            pytest.fail("Celery worker exited:\n" + log.read_text())
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("Celery worker did not become ready:\n" + log.read_text())
    proc.log_path = log
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)  # gone, and its database session with it, before the next test


@pytest.fixture
def browser(chromium_path, monkeypatch):
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        )
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small real checkpoint (EfficientNet-Lite0 with weights=None, 64 px) trained on demo cells."""
    from classifier.ml import api

    root = tmp_path_factory.mktemp("tiny-model")
    classes = ["lymphocyte", "monocyte", "neutrophil_segmented"]
    items = []
    for code in classes:
        for path in sorted((DEMO_CELLS / code).iterdir())[:6]:
            items.append(api.TrainItem(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label=code))
    result = api.train(
        items, classes=classes, ensemble=["efficientnet_lite0"], mode="frozen", epochs=3,
        cache_dir=root / "cache", out_dir=root / "out", device="cpu", weights=None,
        config_overrides={"input_size": 64},
    )
    return result


@pytest.fixture
def active_model(db, tiny_checkpoint):
    """The tiny checkpoint registered as the active ModelVersion (copied under this test's MODEL_DIR)."""
    from tests.factories import TrainedModelVersionFactory

    return TrainedModelVersionFactory(result=tiny_checkpoint, activate=True)


@pytest.fixture(scope="session")
def pbc_checkpoint(tmp_path_factory):
    """A small model with real ImageNet weights (EfficientNet-Lite0 ships them in a Python
    package) trained on the demo's PBC cells: one microscope and stain, so that the demo's
    BCCD fields are foreign to it."""
    from classifier.ml.api import TrainItem, train

    items = [TrainItem(path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), label=c) for p, c in pbc_split()[0]]
    base = tmp_path_factory.mktemp("pbc-model")
    return train(items, classes=sorted({i.label for i in items}), ensemble=["efficientnet_lite0"], mode="default",
                 epochs=30, cache_dir=base / "cache", out_dir=base / "out", device="cpu",
                 config_overrides={"views": ["id", "flip"], "input_size": 224})


@pytest.fixture
def reference_intervals(db):
    """The slides app's seeded reference intervals (put back for transactional tests)."""
    from django.apps import apps

    from slides.seed import seed

    seed(apps)


# --- Directory sign-in: a real OpenLDAP server (tests/accounts/slapd.py) ----------------------------
DIRECTORY_ENV = {
    "LDAP_BIND_DN": "cn=leukoportal,ou=services,dc=hospital,dc=test",
    "LDAP_BIND_PASSWORD": "service-bind-secret",
    "LDAP_USER_SEARCH_BASE": "ou=people,dc=hospital,dc=test",
    "LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=hospital,dc=test",
    "LDAP_DENY_GROUP": "cn=disabled,ou=groups,dc=hospital,dc=test",
}


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory):
    """A real OpenLDAP server (slapd) on a free loopback port with the test directory loaded."""
    server = slapd_start(tmp_path_factory.mktemp("slapd"), REPO / "tests" / "accounts" / "directory.ldif")
    yield server
    slapd_stop(server)


@pytest.fixture
def directory(slapd_server, settings):
    """This deployment signs in through the test directory: the settings its environment would give."""
    from accounts.directory_config import directory_settings

    for name, value in directory_settings({"LDAP_SERVER_URI": slapd_server.uri, **DIRECTORY_ENV}).items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = ["accounts.directory.DirectoryBackend", *settings.AUTHENTICATION_BACKENDS]
    return slapd_server
