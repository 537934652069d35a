"""The embedded default (SQLite under var/): backed up through SQLite's online backup API and
restored into another empty var/ folder, rows and files alike."""
import os
import sqlite3
import subprocess
import sys

from backup.manifest import sha256_file
from tests.helpers import DEMO_CELLS, REPO


def _embedded(var) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MEDIA_ROOT", "MODEL_DIR",
                                                             "FEATURE_CACHE_DIR", "SECRET_KEY")}
    env.update(LEUKOPORTAL_VAR_DIR=str(var), LOG_LEVEL="WARNING", CELERY_BROKER_URL="filesystem://", AUTO_CLASSIFY_UPLOADS="false")
    return env


def _manage(*args, var):
    r = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=_embedded(var), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def test_the_embedded_sqlite_deployment_backs_up_and_restores(tmp_path):
    source, target = tmp_path / "var-a", tmp_path / "var-b"
    _manage("migrate", "--noinput", var=source)
    _manage("import_cells", str(DEMO_CELLS), "--split", "train", "--no-progress", var=source)
    _manage("backup", str(tmp_path / "backup"), var=source)
    assert (tmp_path / "backup" / "database.sqlite3").is_file()
    _manage("restore", str(tmp_path / "backup"), var=target)

    def rows(var):
        with sqlite3.connect(var / "db.sqlite3") as conn:
            return sorted(conn.execute("SELECT sha256, split FROM annotations_cellimage").fetchall())

    assert len(rows(source)) > 50 and rows(target) == rows(source)
    media = {p.relative_to(source / "media"): sha256_file(p) for p in (source / "media").rglob("*") if p.is_file()}
    assert media and {p.relative_to(target / "media"): sha256_file(p)
                      for p in (target / "media").rglob("*") if p.is_file()} == media
