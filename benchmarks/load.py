#!/usr/bin/env python
"""Load test: gunicorn on PostgreSQL, loopback only, a mix of experts labelling, uploads and
report views. Prints requests/s, p50/p95/p99 latency and errors for a 1-user baseline and for
the full load, measured in the same run.

Usage (from the repo root)::

    .venv/bin/python benchmarks/load.py                        # 50 users, 120 s (+ 20 s baseline)
    .venv/bin/python benchmarks/load.py --users 50 --duration 300 --workers 5

Set-up (once, reused by later runs): a template database ``leukoportal_load_base`` on the
PostgreSQL given by ``LOAD_DATABASE_URL`` (default: the local server at 127.0.0.1:5432; each run
measures a fresh copy, ``leukoportal_load``, so every run starts from the same state), migrated, with the cells
of pbc-dev in the shared data folder (``--data``; LEUKO_SHARED_DATA, else ../shared/data beside the checkout): ``--labelled`` per class imported with
``manage.py import_cells`` (final labels), the rest uploaded unlabelled for the experts' queues.
A private Redis (free port) is the broker; the media and caches live under var/load/.

Users (closed loop, each waits a "think time" between actions, as a person does):
* labellers (70 %): open their queue, then for each of a few cells: the cell's JSON, its
  thumbnail, and a label (think 0.5-1.5 s per cell);
* uploaders (10 %): upload one new cell image (a pbc-dev JPEG, re-cropped so it is new) every 2-4 s;
* readers (20 %): the dashboard, the reports index and the labelling-agreement page every 2-4 s.
All requests carry an API token or a session cookie made for the user; nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults.stack import PrivateRedis, free_port, wait_until  # noqa: E402

PY = sys.executable


def _env(db_url: str, broker: str, var: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "leukoportal.settings", "DATABASE_URL": db_url, "CELERY_BROKER_URL": broker,
        "SECRET_KEY": "load-benchmark-secret-key-" + "y" * 40, "DEBUG": "false", "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false", "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LEUKOPORTAL_VAR_DIR": str(var), "MEDIA_ROOT": str(var / "media"), "LOG_LEVEL": "WARNING",
        "AUTO_CLASSIFY_UPLOADS": "false", "PYTHONUNBUFFERED": "1",
    })
    env.pop("CACHE_URL", None)
    return env


SETUP = r"""
import json, sys, random
from pathlib import Path
import django
django.setup()
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.auth import SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from rest_framework.authtoken.models import Token
from annotations.models import CellImage
from annotations.services import image_upload
args = json.load(sys.stdin)  # on stdin: thousands of image paths do not fit on one command line
User = get_user_model()
uploader, _ = User.objects.get_or_create(username="load-uploader")
uploader.groups.add(Group.objects.get(name="labeller"))
if CellImage.objects.filter(final_label__isnull=True).count() < 100:
    for path in args["unlabelled"]:
        image_upload(data=Path(path).read_bytes(), uploaded_by=uploader, enqueue_classification=False)
out = {}
for i in range(args["users"]):
    role = "reviewer" if i % 5 == 4 else "labeller"
    user, _ = User.objects.get_or_create(username=f"load-{i}")
    user.groups.add(Group.objects.get(name=role))
    token, _ = Token.objects.get_or_create(user=user)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    out[user.username] = {"token": token.key, "session": session.session_key, "role": role}
print(json.dumps({"users": out, "cells": CellImage.objects.count(),
                  "unlabelled": CellImage.objects.filter(final_label__isnull=True).count(),
                  "ids": list(CellImage.objects.values_list("id", flat=True)[:5000])}))
"""


def prepare(args, env) -> dict:
    """Build (once) the template database ``<name>_base``, then give this run a fresh copy of it
    (PostgreSQL ``CREATE DATABASE ... TEMPLATE``): every run starts from the same cells, labels
    and queues, so runs are comparable (the load itself labels thousands of cells)."""
    import psycopg

    server, db_name = args.database_url.rsplit("/", 1)
    admin_url = f"{server}/postgres"
    base_name = f"{db_name}_base"
    base_url = f"{server}/{base_name}"
    base_env = dict(env, DATABASE_URL=base_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [base_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{base_name}"')
    subprocess.run([PY, "manage.py", "migrate", "--noinput"], cwd=REPO, env=base_env, check=True, capture_output=True)
    with psycopg.connect(base_url) as conn:
        have = conn.execute("SELECT count(*) FROM annotations_cellimage").fetchone()[0]
    data = Path(args.data)
    unlabelled = []
    tree = Path(tempfile.mkdtemp(prefix="load-import-"))
    try:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            files = sorted(folder.glob("*"))
            (tree / folder.name).mkdir()
            for f in files[: args.labelled]:
                (tree / folder.name / f.name).symlink_to(f)
            unlabelled += [str(f) for f in files[args.labelled :]]
        if have < 1000:
            print(f"importing {args.labelled} labelled cells per class from {data} ...", flush=True)
            t0 = time.time()
            subprocess.run([PY, "manage.py", "import_cells", str(tree), "--no-progress"], cwd=REPO, env=base_env,
                           check=True)
            print(f"  imported in {time.time() - t0:.0f}s; uploading {len(unlabelled)} unlabelled ...", flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    r = subprocess.run([PY, "-c", SETUP], input=json.dumps({"users": args.users, "unlabelled": unlabelled}),
                       cwd=REPO, env=base_env, check=True, capture_output=True, text=True)
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # the copy inherits the statistics autovacuum keeps on a database in use
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db_name}" TEMPLATE "{base_name}"')
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- client ------------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples: list[tuple[str, float, int]] = []  # (kind, seconds, status or 0 for a connection error)

    def add(self, kind, seconds, status):
        with self.lock:
            self.samples.append((kind, seconds, status))


class User:
    def __init__(self, port, creds, rec: Recorder, cell_ids, images, think: bool):
        self.port, self.creds, self.rec, self.cell_ids, self.images, self.think = port, creds, rec, cell_ids, images, think
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self.conn

    def request(self, kind, method, path, *, json_body=None, multipart=None, page=False):
        headers = {"Connection": "keep-alive"}
        if page:
            headers["Cookie"] = f"sessionid={self.creds['session']}"
        else:
            headers["Authorization"] = f"Token {self.creds['token']}"
            headers["Accept"] = "application/json"
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif multipart is not None:
            boundary = uuid.uuid4().hex
            name, data = multipart
            body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                    f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        started = time.perf_counter()
        try:
            conn = self._conn()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn, status, raw = None, 0, b""
        self.rec.add(kind, time.perf_counter() - started, status)
        return status, raw

    def pause(self, low, high):
        if self.think:
            time.sleep(random.uniform(low, high))

    def labeller(self, stop):
        classes = ["lymphocyte", "monocyte", "neutrophil_segmented", "eosinophil", "basophil"]
        while not stop.is_set():
            status, raw = self.request("queue", "GET", "/api/queues/unlabelled/?page_size=20")
            ids = [c["id"] for c in json.loads(raw).get("results", [])] if status == 200 else []
            ids = (ids or random.sample(self.cell_ids, 5))[:5]
            for pk in ids:
                if stop.is_set():
                    return
                self.request("cell", "GET", f"/api/cells/{pk}/")
                self.request("thumb", "GET", f"/images/{pk}/thumb/", page=True)
                self.pause(0.5, 1.5)
                self.request("label", "POST", "/api/labels/", json_body={"image": pk, "cell_class": random.choice(classes)})

    def uploader(self, stop):
        from PIL import Image

        while not stop.is_set():
            with Image.open(random.choice(self.images)) as img:
                x, y = random.randint(0, 40), random.randint(0, 40)
                crop = img.convert("RGB").crop((x, y, x + 300, y + 300))
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=90)
            self.request("upload", "POST", "/api/images/", multipart=("cell.jpg", buf.getvalue()))
            self.pause(2, 4)

    def reader(self, stop):
        pages = ["/", "/reports/", "/reports/agreement/", "/api/queues/"]
        while not stop.is_set():
            path = random.choice(pages)
            self.request("report" if path != "/api/queues/" else "queue", "GET", path, page=path != "/api/queues/")
            self.pause(2, 4)


def run_phase(port, creds_list, cell_ids, images, n_users, seconds, think=True) -> Recorder:
    rec, stop, threads = Recorder(), threading.Event(), []
    for i in range(n_users):
        creds = creds_list[i % len(creds_list)]
        user = User(port, creds, rec, cell_ids, images, think)
        kind = "uploader" if i % 10 == 9 else ("reader" if creds["role"] == "reviewer" else "labeller")
        t = threading.Thread(target=getattr(user, kind), args=(stop,), daemon=True)
        threads.append(t)
        t.start()
        time.sleep(0.02)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=40)
    rec.seconds = seconds
    return rec


def _pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def report(label, rec: Recorder) -> dict:
    lat = [s for _, s, _ in rec.samples]
    errors = [st for _, _, st in rec.samples if st == 0 or st >= 500]
    by_kind = defaultdict(list)
    for kind, s, _ in rec.samples:
        by_kind[kind].append(s)
    row = {"label": label, "requests": len(lat), "rps": len(lat) / rec.seconds, "p50": _pct(lat, 50) * 1000,
           "p95": _pct(lat, 95) * 1000, "p99": _pct(lat, 99) * 1000, "errors": len(errors),
           "client_4xx": sum(1 for _, _, st in rec.samples if 400 <= st < 500),
           "kinds": {k: (len(v), _pct(v, 50) * 1000, _pct(v, 95) * 1000) for k, v in sorted(by_kind.items())}}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=120, help="seconds of full load")
    parser.add_argument("--baseline", type=int, default=20, help="seconds of the 1-user baseline")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) * 2 + 1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--labelled", type=int, default=300, help="labelled cells per class to import")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "pbc-dev"))
    parser.add_argument("--database-url", default=os.environ.get("LOAD_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/leukoportal_load"))
    args = parser.parse_args()
    if "127.0.0.1" not in args.database_url and "localhost" not in args.database_url:
        parser.error("the load test runs on loopback only")

    var = REPO / "var" / "load"
    var.mkdir(parents=True, exist_ok=True)
    redis_dir = Path(tempfile.mkdtemp(prefix="load-redis-"))
    redis = PrivateRedis(redis_dir)
    redis.start()
    env = _env(args.database_url, redis.url(0), var)
    web = None
    try:
        info = prepare(args, env)
        print(f"database: {info['cells']} cells ({info['unlabelled']} unlabelled), {len(info['users'])} users", flush=True)
        port = free_port()
        web = subprocess.Popen(
            [PY, "-m", "gunicorn", "leukoportal.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers",
             str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread", "--keep-alive", "5",
             "--log-level", "warning"], cwd=REPO, env=env, start_new_session=True,
        )
        wait_until(lambda: _up(port), 60, "gunicorn")
        creds = list(info["users"].values())
        images = [p for p in Path(args.data).rglob("*.jpg")][:500]
        run_phase(port, creds, info["ids"], images, min(10, args.users), 5)  # warm-up: imports, caches, thumbnails
        print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread) on 127.0.0.1:{port}; "
              f"{os.cpu_count()} CPU cores", flush=True)
        rows = [report("1 user (baseline)", run_phase(port, creds, info["ids"], images, 1, args.baseline))]
        print(f"baseline done; {args.users} users for {args.duration}s ...", flush=True)
        rows.append(report(f"{args.users} users", run_phase(port, creds, info["ids"], images, args.users, args.duration)))
    finally:
        if web is not None and web.poll() is None:
            os.killpg(web.pid, 15)
            web.wait(timeout=30)
        redis.kill()
        shutil.rmtree(redis_dir, ignore_errors=True)

    print()
    print(f"{'phase':<20} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} {'4xx':>5}")
    for r in rows:
        print(f"{r['label']:<20} {r['requests']:>8} {r['rps']:>7.1f} {r['p50']:>7.1f} {r['p95']:>7.1f} {r['p99']:>7.1f} "
              f"{r['errors']:>6} {r['client_4xx']:>5}")
    print()
    print(f"{args.users} users, per request kind: count, p50 ms, p95 ms")
    for kind, (n, p50, p95) in rows[-1]["kinds"].items():
        print(f"  {kind:<8} {n:>7} {p50:>8.1f} {p95:>8.1f}")
    full = rows[-1]
    held = full["p95"] < 300 and full["errors"] == 0
    print(f"\ntarget (p95 < 300 ms, 0 errors at {args.users} users): {'HELD' if held else 'NOT HELD'}")
    return 0 if held else 1


def _up(port) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/accounts/login/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
