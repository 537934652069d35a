#!/usr/bin/env python
"""Latency of the labelling portal under gunicorn on PostgreSQL, with the pbc-dev cells imported.

Usage (from the repo root; PostgreSQL on 127.0.0.1:5432 as for the tests)::

    .venv/bin/python benchmarks/portal.py                  # import once into leukoportal_bench, then measure
    .venv/bin/python benchmarks/portal.py --fresh          # drop and rebuild the benchmark database first
    .venv/bin/python benchmarks/portal.py --requests 200 --workers 5

Protocol
--------
* Database: a separate PostgreSQL database ``leukoportal_bench`` (created here), media under
  ``var/bench/``. The cells are imported with ``manage.py import_cells DATA --split train`` (their folder
  label is the first reading); the lab then asks for 2 readings, so every imported cell waits in the
  benchmark labellers' queues (each run first supersedes the previous run's benchmark labels, so every
  run starts from the same state: 3,600 cells, each waiting for a second reading). A model version is registered with one prediction per cell (random
  confidences) so that the pre-labelled queue (sorted by confidence) has work to do.
* Server: gunicorn on 127.0.0.1 only, sync workers (``--workers``), DEBUG off, as in production.
* Clients: a thread pool of closed-loop clients (no think time), each logged in as its own labeller,
  keep-alive HTTP/1.1 on loopback. Every scenario is bounded in count (``--requests`` per client
  count) and in time (``--max-seconds``). Figures: p50 / p95 / max in milliseconds and throughput.
* Scenarios: the labelling page (grid of 48, unlabelled queue and pre-labelled queue), posting a label
  (REST API; each client labels its own cells), each at 1 and 20 clients. Baseline measured in the same
  run: the plain image list page (48 per page, no queue logic).
* "A page of 48 thumbnails fully loaded": headless Chromium (Debian's) opens the labelling page and
  waits for the load event (all 48 images), cold (thumbnails not yet made), warm (made, new browser
  profile) and cached (same profile, immutable cache). Baseline in the same run: the same 48 cells as
  full-size images (the plain image list page loads those).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import bench_env, manage  # noqa: E402

DB_NAME = "leukoportal_bench"
VAR = REPO / "var" / "bench"
N_USERS = 20

SETUP = r"""
import json, random, secrets
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from annotations.models import CellImage, LabSettings
from classifier.models import ModelVersion, Prediction

from django.utils import timezone
from annotations.models import Label
# Every run starts from the same state: each imported cell has its one imported reading and waits for a
# second one (as if the lab had asked for two readings from the start); earlier benchmark labels are superseded.
LabSettings.objects.filter(pk=LabSettings.get().pk).update(labels_required_train=2)
Label.objects.filter(labeller__username__startswith="bench", superseded_at__isnull=True).update(superseded_at=timezone.now())
# the label services keep current_label_count; the bulk update above bypasses them, so recount
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
current = (Label.objects.filter(image=OuterRef("pk"), superseded_at__isnull=True).order_by()
           .values("image").annotate(n=Count("id")).values("n"))
CellImage.objects.update(current_label_count=Coalesce(Subquery(current), 0))
CellImage.objects.filter(adjudications__isnull=True).update(final_label=None, final_label_at=None, needs_review=False)
version = ModelVersion.objects.filter(ensemble="bench").first()
if version is None:
    ModelVersion.objects.filter(status="active").update(status="retired")
    version = ModelVersion.objects.create(ensemble="bench", status="active", classes=[], backbones=["bench"])
codes = ["neutrophil_segmented", "lymphocyte", "monocyte", "eosinophil", "basophil"]
rng = random.Random(0)
have = set(Prediction.objects.filter(model_version=version).values_list("image_id", flat=True))
Prediction.objects.bulk_create([
    Prediction(image_id=i, model_version=version, label=rng.choice(codes), top_class=rng.choice(codes),
               confidence=rng.random(), agreement=1, n_backbones=1)
    for i in CellImage.objects.exclude(id__in=have).values_list("id", flat=True)
], batch_size=1000)
group = Group.objects.get(name="labeller")
User = get_user_model()
out = {"sessions": [], "images": list(CellImage.objects.order_by("id").values_list("id", flat=True))}
for n in range(%(n_users)d):
    user, _ = User.objects.get_or_create(username=f"bench{n}")
    user.groups.add(group)
    s = SessionStore()
    s[SESSION_KEY], s[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    out["sessions"].append(s.session_key)
print("BENCH-JSON " + json.dumps(out))
"""


def database_prepare(args) -> str:
    import psycopg

    with psycopg.connect(args.pg_admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and args.fresh:
            conn.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
            shutil.rmtree(VAR, ignore_errors=True)
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    base = args.pg_admin.rsplit("/", 1)[0]
    return f"{base}/{DB_NAME}"


# --- HTTP clients ----------------------------------------------------------------------------
class Client:
    """One keep-alive connection, logged in as one labeller (session cookie + CSRF token)."""

    def __init__(self, port: int, session_key: str):
        self.port, self.csrf = port, "benchcsrf" + "x" * 23
        self.cookie = f"sessionid={session_key}; csrftoken={self.csrf}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        h = {"Cookie": self.cookie, "Host": "127.0.0.1"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h.update({"Content-Type": "application/json", "X-CSRFToken": self.csrf, "Accept": "application/json"})
        h.update(headers or {})
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=h)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def run_scenario(name, clients, make_request, n_requests: int, max_seconds: float) -> dict:
    """Closed loop: each client sends its next request as soon as the previous one is answered."""
    latencies, errors = [], []
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    per_client = max(1, n_requests // len(clients))

    def loop(index: int):
        client = clients[index]
        for k in range(per_client):
            if time.perf_counter() > deadline:
                return
            method, path, body = make_request(index, k)
            t0 = time.perf_counter()
            status, payload = client.request(method, path, body)
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(dt)
                if status >= 400:
                    errors.append((status, payload[:200]))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(loop, range(len(clients))))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {"name": name, "clients": len(clients), "n": len(lat), "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "p50": q[49], "p95": q[94], "max": lat[-1], "rps": len(lat) / wall}


def page_load_times(port: int, session_key: str, cells_url: str, baseline_url: str) -> dict:
    """Time to the load event (all images) of the labelling page in headless Chromium."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    out = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])

        def load(context, url) -> tuple[float, int]:
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}{url}", wait_until="load")
            selector = "'.lcell img, .grid .cell img'"
            deadline = time.time() + 30
            while time.time() < deadline and not page.evaluate(
                    f"() => Array.from(document.querySelectorAll({selector})).every(i => i.complete)"):
                page.wait_for_timeout(20)
            # fully loaded = the later of the load event and the last image's response (lazy images included)
            timing = page.evaluate(
                "() => { const n = performance.getEntriesByType('navigation')[0];"
                f" const imgs = Array.from(document.querySelectorAll({selector}));"
                " const ends = performance.getEntriesByType('resource').filter(r => r.initiatorType === 'img')"
                "   .map(r => r.responseEnd);"
                " return [Math.max(n.loadEventEnd, ...ends) - n.startTime, imgs.length,"
                " imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)]; }")
            page.close()
            assert not timing[2], f"images of {url} that did not load: {timing[2][:5]}"
            return timing[0], timing[1]

        def fresh():
            ctx = browser.new_context(viewport={"width": 1280, "height": 8000})  # every image in view: none lazy
            ctx.add_cookies([{"name": "sessionid", "value": session_key, "domain": "127.0.0.1", "path": "/"}])
            return ctx

        def median_of_3(url):  # each load in a new browser profile
            times = []
            for _ in range(3):
                ctx = fresh()
                times.append(load(ctx, url))
                ctx.close()
            return sorted(times)[1]

        shutil.rmtree(VAR / "media" / "thumbs", ignore_errors=True)
        ctx = fresh()
        out["thumbnails, cold (made on first request)"] = load(ctx, cells_url)
        out["thumbnails, browser cache (same profile)"] = load(ctx, cells_url)
        ctx.close()
        out["thumbnails, warm server, new browser profile (median of 3)"] = median_of_3(cells_url)
        out["baseline: image list page, 48 full-size images (median of 3)"] = median_of_3(baseline_url)
        browser.close()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "pbc-dev"))
    parser.add_argument("--pg-admin", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the benchmark database")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) * 2 + 1, help="gunicorn sync workers")
    parser.add_argument("--requests", type=int, default=300, help="requests per scenario (all clients together)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per scenario")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium page-load figures")
    args = parser.parse_args()

    db_url = database_prepare(args)
    env = bench_env(db_url, VAR)
    print(f"database {DB_NAME}; migrating", flush=True)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    count = manage(env, "shell", "-c", "from annotations.models import CellImage; print(CellImage.objects.count())",
                   capture=True).strip().splitlines()[-1]
    if int(count) < 100:
        print(f"importing {args.data} (train split) ...", flush=True)
        t0 = time.perf_counter()
        manage(env, "import_cells", args.data, "--split", "train", "--no-progress")
        print(f"  imported in {time.perf_counter() - t0:.0f} s", flush=True)
    setup = manage(env, "shell", "-c", SETUP % {"n_users": N_USERS}, capture=True)
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # planner statistics after the bulk import (autovacuum may lag)
    info = json.loads(next(line for line in setup.splitlines() if line.startswith("BENCH-JSON "))[len("BENCH-JSON "):])
    images, sessions = info["images"], info["sessions"]
    print(f"{len(images)} cells, {len(sessions)} labellers", flush=True)

    log = open(VAR / "gunicorn.log", "w")
    server = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "gunicorn"), "leukoportal.wsgi", "-b", f"127.0.0.1:{args.port}",
         "-w", str(args.workers), "--keep-alive", "30"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                status, _ = Client(args.port, sessions[0]).request("GET", "/label/")
                if status == 200:
                    break
                raise RuntimeError(f"/label/ answered {status}; see {VAR / 'gunicorn.log'}")
            except (ConnectionError, OSError):
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start; see {VAR / 'gunicorn.log'}") from None
                time.sleep(0.3)
        print(f"gunicorn on 127.0.0.1:{args.port}, {args.workers} sync workers, {os.cpu_count()} CPUs; "
              f"load average before: {os.getloadavg()[0]:.1f}\n", flush=True)

        classes = ["neutrophil_segmented", "lymphocyte", "monocyte", "eosinophil"]
        rng = random.Random(1)
        results = []
        for n_clients in (1, 20):
            clients = [Client(args.port, sessions[i]) for i in range(n_clients)]
            for c in clients:  # warm the connections and the workers
                c.request("GET", "/label/unlabelled/")

            def get(path):
                return lambda i, k: ("GET", path, None)

            def post_label(i, k):
                # client i labels its own share of the cells, so two clients never race on one by design
                own = images[i::N_USERS]
                return "POST", "/api/labels/", {"image": own[k % len(own)], "cell_class": rng.choice(classes)}

            for name, make in (
                ("baseline: image list page (48)", get("/images/")),
                ("labelling page, unlabelled queue (48)", get("/label/unlabelled/")),
                ("labelling page, pre-labelled queue (48)", get("/label/prelabelled/")),
                ("post a label (API)", post_label),
            ):
                results.append(run_scenario(name, clients, make, args.requests if n_clients > 1 else args.requests // 3,
                                            args.max_seconds))
        print(f"{'scenario':44s} {'clients':>7s} {'n':>5s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s} {'req/s':>7s} {'errors':>6s}")
        for r in results:
            print(f"{r['name']:44s} {r['clients']:7d} {r['n']:5d} {r['p50']:8.1f} {r['p95']:8.1f} {r['max']:8.1f} "
                  f"{r['rps']:7.1f} {r['errors']:6d}")
            if r["first_error"]:
                print(f"    first error: {r['first_error']}")
        print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share these CPUs)")
        # No latency target at 20 closed-loop clients: on 2 cores with the load generator beside the
        # server, that figure measures the machine, not the code (compare with the baseline above).

        if not args.no_browser:
            print("\npage of 48 thumbnails, fully loaded (Chromium load event):")
            times = page_load_times(args.port, sessions[-1], "/label/prelabelled/", "/images/")
            for name, (ms, n_images) in times.items():
                print(f"  {name:62s} {ms:7.0f} ms  ({n_images} images)")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=20)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
