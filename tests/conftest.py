import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LEUKO_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO_CELLS = REPO / "demo" / "cells"
PASSWORD = "a-long-test-password-42"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MODEL_DIR = tmp_path / "models"
    settings.FEATURE_CACHE_DIR = tmp_path / "feature-cache"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only


def make_user(django_user_model, username, role=None):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password=PASSWORD, is_staff=role == "lab_admin")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def labeller(db, django_user_model):
    return make_user(django_user_model, "lab1", "labeller")


@pytest.fixture
def labeller2(db, django_user_model):
    return make_user(django_user_model, "lab2", "labeller")


@pytest.fixture
def reviewer(db, django_user_model):
    return make_user(django_user_model, "rev1", "reviewer")


@pytest.fixture
def reviewer2(db, django_user_model):
    return make_user(django_user_model, "rev2", "reviewer")


@pytest.fixture
def lab_admin(db, django_user_model):
    return make_user(django_user_model, "admin1", "lab_admin")


@pytest.fixture
def no_role_user(db, django_user_model):
    return make_user(django_user_model, "norole", None)


def png_bytes(color=(200, 100, 150), size=(64, 64), **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG", **save_kwargs)
    return buf.getvalue()


def jpeg_bytes(color=(200, 100, 150), size=(64, 64), **save_kwargs) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    # some texture so that JPEG encodes real data
    for x in range(0, size[0], 4):
        img.putpixel((x, x % size[1]), (x % 255, 20, 90))
    img.save(buf, format="JPEG", quality=92, **save_kwargs)
    return buf.getvalue()


@pytest.fixture
def demo_cells():
    return DEMO_CELLS


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


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
        import redis

        from leukoportal.celery import app

        self.client = redis.Redis.from_url(app.conf.broker_url)

    def empty(self) -> None:
        for queue in self.QUEUES:
            for key in self.client.scan_iter(f"{queue}*"):  # the queue's list and its priority lists
                self.client.delete(key)

    def messages(self, queue: str) -> list[tuple[str, list]]:
        """(task name, args) of each message waiting in ``queue``, oldest first."""
        import base64
        import json

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
    import subprocess
    import sys
    import time

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
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout=60.0, interval=0.2, message="condition"):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


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


SCREENSHOTS = REPO / "test-output" / "screenshots"


def screenshot(page, name: str) -> Path:
    """Keep a screenshot of a main page under test-output/ for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def browser_login(page, live_server, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small real checkpoint (EfficientNet-Lite0 with weights=None, 64 px) trained on demo cells."""
    from classifier.ml import api

    root = tmp_path_factory.mktemp("tiny-model")
    classes = ["lymphocyte", "monocyte", "neutrophil_segmented"]
    items = []
    for code in classes:
        for path in sorted((DEMO_CELLS / code).iterdir())[:6]:
            import hashlib

            items.append(api.TrainItem(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label=code))
    result = api.train(
        items, classes=classes, ensemble=["efficientnet_lite0"], mode="frozen", epochs=3,
        cache_dir=root / "cache", out_dir=root / "out", device="cpu", weights=None,
        config_overrides={"input_size": 64},
    )
    return result


@pytest.fixture
def active_model(db, settings, tiny_checkpoint):
    """Register the tiny checkpoint as the active ModelVersion (copied under this test's MODEL_DIR)."""
    import shutil

    from classifier.services import model_version_activate, model_version_from_training

    target = Path(settings.MODEL_DIR) / "tiny" / Path(tiny_checkpoint.checkpoint_path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_checkpoint.checkpoint_path, target)
    result = type(tiny_checkpoint)(**{**tiny_checkpoint.__dict__, "checkpoint_path": target})
    version = model_version_from_training(result=result, ensemble="tiny", mode="frozen", snapshot={"items": []})
    return model_version_activate(version=version)


def pbc_split():
    """The demo's PBC cells: four of five per class train, every fifth is held out (in-domain)."""
    train, held = [], []
    for folder in sorted(p for p in DEMO_CELLS.iterdir() if p.is_dir()):
        for i, path in enumerate(sorted(folder.iterdir())):
            (held if i % 5 == 0 else train).append((path, folder.name))
    return train, held


@pytest.fixture(scope="session")
def pbc_checkpoint(tmp_path_factory):
    """A small model with real ImageNet weights (EfficientNet-Lite0 ships them in a Python
    package) trained on the demo's PBC cells: one microscope and stain, so that the demo's
    BCCD fields are foreign to it."""
    import hashlib

    from classifier.ml.api import TrainItem, train

    items = [TrainItem(path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), label=c) for p, c in pbc_split()[0]]
    base = tmp_path_factory.mktemp("pbc-model")
    return train(items, classes=sorted({i.label for i in items}), ensemble=["efficientnet_lite0"], mode="default",
                 epochs=30, cache_dir=base / "cache", out_dir=base / "out", device="cpu",
                 config_overrides={"views": ["id", "flip"], "input_size": 224})
