#!/usr/bin/env python
"""Time and peak memory of the cell export (and of reading it back) on pbc-dev, PostgreSQL.

Usage (from the repo root; PostgreSQL on 127.0.0.1:5432 as for the tests)::

    .venv/bin/python benchmarks/export.py              # import pbc-dev once into leukoportal_bench_export, then measure
    .venv/bin/python benchmarks/export.py --fresh      # drop and rebuild the benchmark databases first
    .venv/bin/python benchmarks/export.py --no-import  # skip reading the export back into a second database

Protocol
--------
* Database ``leukoportal_bench_export`` (created here), media under ``var/bench-export/``: the 3,600
  pbc-dev cells imported with ``manage.py import_cells DATA --split train`` (their folder is the
  first reading, so every cell has a final class and one reading in the manifest).
* Every measurement runs in its own fresh Python process (Django set up, connected to the database)
  that reports its wall time and its peak resident memory (``ru_maxrss``) and, for comparison, its
  resident memory just before the measured work (for the web path: after a first page, which loads
  every view module, torch included). The processes run one after another on the same machine.
* Baseline, in the same run: the same process reading the same stored files whole, one after the
  other, and discarding them (the least any export must do). For contrast: the same files zipped
  into memory with the standard library's ``zipfile`` (what "the whole archive in memory" costs).
* Measured: ``manage.py export_cells OUT.zip`` (the command, writing the file), the export page's
  streamed response consumed and discarded (the web path: a lab admin's POST through Django's
  test client), and the command on a subset of 800 cells (2 classes): peak memory that does not
  grow with the number of cells is what "bounded" means here.
* Read back: ``manage.py import_cells OUT.zip --create-readers`` into a second, freshly migrated
  database (``leukoportal_bench_export_import``) -- the check of every file and the one
  transaction -- and the same import again (nothing to do).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import PY, bench_env, manage  # noqa: E402

DB_NAME = "leukoportal_bench_export"
DB_IMPORT = "leukoportal_bench_export_import"
VAR = REPO / "var" / "bench-export"

CHILD = r"""
import json, os, resource, sys, time
import django
django.setup()

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
from annotations.models import CellImage
from django.core.files.storage import default_storage
names = list(CellImage.objects.order_by("pk").values_list("file", flat=True))
mode, out = sys.argv[1], sys.argv[2]
if mode == "web":  # the first request loads every URL's views (and with them torch): not the export's memory
    from django.contrib.auth import get_user_model
    from django.test import Client
    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_superuser": True})
    client = Client()
    client.force_login(user)
    assert client.get("/export/cells/").status_code == 200
start_rss = rss_mb()
n_bytes = 0
t0 = time.perf_counter()
if mode == "read":
    for name in names:
        with default_storage.open(name, "rb") as fh:
            n_bytes += len(fh.read())
elif mode == "zip-in-memory":
    import io, zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in names:
            with default_storage.open(name, "rb") as fh:
                zf.writestr(name, fh.read())
    n_bytes = len(buf.getvalue())
elif mode == "command":
    from django.core.management import call_command
    call_command("export_cells", out, "--no-progress", *sys.argv[3:])
    n_bytes = os.path.getsize(out)
elif mode == "web":
    response = client.post("/export/cells/", {"split": "all", "status": "final", "date_field": "uploaded",
                                              "sources": ["cell", "slide_cell"]})
    assert response.status_code == 200, response.status_code
    for chunk in response.streaming_content:
        n_bytes += len(chunk)
    assert n_bytes == int(response["Content-Length"])
elif mode == "import":
    from django.core.management import call_command
    call_command("import_cells", out, "--create-readers", "--no-progress")
else:
    raise SystemExit(f"unknown mode {mode}")
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("BENCH-JSON " + json.dumps({"seconds": seconds, "peak_rss_mb": peak, "start_rss_mb": start_rss,
                                  "bytes": n_bytes, "cells": len(names)}))
"""


def export_env(db_url: str) -> dict:
    """The benchmark's environment, with the settings module named (the child runs Django itself)."""
    return bench_env(db_url, VAR, ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
                     DJANGO_SETTINGS_MODULE="leukoportal.settings")


def database(admin_url: str, name: str, *, fresh: bool) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and fresh:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def measure(env, mode: str, out: str = "-", *extra) -> dict:
    result = subprocess.run([PY, "-c", CHILD, mode, out, *extra], cwd=REPO, env=env, text=True, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{result.stderr[-3000:]}")
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH-JSON "))
    return json.loads(line[len("BENCH-JSON "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("LEUKO_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", default=str(shared / "pbc-dev"), help="default: $LEUKO_SHARED_DATA/pbc-dev")
    parser.add_argument("--pg-admin", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the benchmark databases")
    parser.add_argument("--no-import", action="store_true", help="skip reading the export back")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True, exist_ok=True)

    env = export_env(database(args.pg_admin, DB_NAME, fresh=args.fresh))
    print(f"database {DB_NAME}; migrating", flush=True)
    manage(env, "migrate", "--noinput", "-v", "0")
    count = int(manage(env, "shell", "-c", "from annotations.models import CellImage; print(CellImage.objects.count())",
                       capture=True).strip().splitlines()[-1])
    if count < 3600:
        print(f"importing {args.data} (train split) ...", flush=True)
        t0 = time.perf_counter()
        manage(env, "import_cells", args.data, "--split", "train", "--no-progress")
        print(f"  imported in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}\n", flush=True)

    out = VAR / "export.zip"
    rows = [
        ("baseline: read the same stored files", measure(env, "read")),
        ("contrast: zip them into memory (zipfile)", measure(env, "zip-in-memory")),
        ("export_cells (command, writes the zip)", measure(env, "command", str(out))),
        ("export page (streamed response, discarded)", measure(env, "web")),
        ("export_cells, 2 classes (800 cells)", measure(env, "command", str(VAR / "subset.zip"),
                                                        "--classes", "lymphocyte,monocyte")),
    ]
    print(f"{'measurement':46s} {'seconds':>8s} {'peak RSS MB':>12s} {'RSS before':>13s} {'MB written':>11s}")
    for name, r in rows:
        print(f"{name:46s} {r['seconds']:8.2f} {r['peak_rss_mb']:12.1f} {r['start_rss_mb']:13.1f} "
              f"{r['bytes'] / 1e6:11.1f}")
    print(f"\n{rows[0][1]['cells']} cells in the database; the export holds "
          f"{sum(1 for _ in __import__('zipfile').ZipFile(out).namelist() if _.endswith('.png'))} images.")
    base, command = rows[0][1], rows[2][1]
    print(f"export_cells: {command['seconds']:.2f} s ({command['seconds'] / base['seconds']:.1f}x the plain read), "
          f"peak RSS {command['peak_rss_mb']:.0f} MB vs {base['peak_rss_mb']:.0f} MB for the plain read "
          f"(+{command['peak_rss_mb'] - base['peak_rss_mb']:.0f} MB) and {rows[1][1]['peak_rss_mb']:.0f} MB "
          "for the archive built in memory.")

    if not args.no_import:
        import_env = export_env(database(args.pg_admin, DB_IMPORT, fresh=True))
        import_env["MEDIA_ROOT"] = str(VAR / "media-import")
        shutil.rmtree(VAR / "media-import", ignore_errors=True)
        manage(import_env, "migrate", "--noinput", "-v", "0")
        first = measure(import_env, "import", str(out))
        again = measure(import_env, "import", str(out))
        print(f"\nimport_cells export.zip into a fresh database: {first['seconds']:.1f} s, peak RSS "
              f"{first['peak_rss_mb']:.0f} MB; the same import again (nothing to do): {again['seconds']:.1f} s, "
              f"peak RSS {again['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
