"""The restore drill: a PostgreSQL deployment with real content is backed up with `manage.py backup`,
restored with `manage.py restore` into a fresh database and fresh media/model folders, and compared:
every row of every table, every file by sha256, and the active model's predictions on the same cells."""
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from backup.manifest import MANIFEST, sha256_file
from tests.factories import CellImageFactory, TrainedModelVersionFactory, cell_class, verified_slide
from tests.helpers import DEMO_CELLS, REPO

pytestmark = pytest.mark.django_db(transaction=True)

# Written after the dump by design: the run that made the backup records its own outcome, and the
# restore records itself in the restored deployment's audit trail.
NOT_COMPARED = {"backup_backuprun"}


def _pg(name: str | None = None) -> str:
    db = connection.settings_dict
    return (f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{name or db['NAME']}")


def _env(*, database_url: str, root: Path) -> dict:
    env = os.environ.copy()
    env.update(DATABASE_URL=database_url, MEDIA_ROOT=str(root / "media"), MODEL_DIR=str(root / "models"),
               FEATURE_CACHE_DIR=str(root / "feature-cache"), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING",
               CLASSIFIER_RUNTIME="torch")
    return env


def _manage(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _rows(url: str) -> dict[str, list[str]]:
    """Every row of every table of the portal, as JSON text, sorted; the backup's own audit events aside."""
    out = {}
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        for table in tables:
            if table in NOT_COMPARED:
                continue
            where = " WHERE action NOT LIKE 'backup.%%'" if table == "annotations_auditevent" else ""
            rows = conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t{where}').fetchall()
            out[table] = sorted(r[0] for r in rows)
    return out


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fresh_database():
    """An empty PostgreSQL database beside the test database, dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_restore"
    with psycopg.connect(_pg("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(_pg("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _populate(*, labeller, labeller2, reviewer, lab_admin, tiny_checkpoint):
    from annotations.services import adjudication_submit, label_submit
    from slides.services import slide_correct, slide_sign

    cells = [CellImageFactory(uploaded_by=labeller, data=path.read_bytes())
             for code in ("lymphocyte", "monocyte") for path in sorted((DEMO_CELLS / code).iterdir())[:2]]
    disputed = CellImageFactory(uploaded_by=labeller, split="heldout")
    label_submit(image=cells[0], labeller=labeller, cell_class=cell_class("lymphocyte"))
    label_submit(image=disputed, labeller=labeller, cell_class=cell_class("lymphocyte"))
    label_submit(image=disputed, labeller=labeller2, cell_class=cell_class("monocyte"))
    adjudication_submit(image=disputed, reviewer=reviewer, cell_class=cell_class("monocyte"), note="nucleus")
    signed = slide_sign(slide=verified_slide(created_by=reviewer, code="DRILL-1"), actor=reviewer, reason="drill")
    corrected = slide_correct(slide=signed, actor=reviewer, reason="a monocyte")  # signed v1, corrected v2
    slide_sign(slide=corrected, actor=reviewer, reason="drill", comment="Corrected.")
    TrainedModelVersionFactory(result=tiny_checkpoint, folder="v1", activate=True)
    TrainedModelVersionFactory(result=tiny_checkpoint, folder="v2", activate=True)
    return cells, signed


def test_a_backup_restores_into_an_empty_deployment_with_every_row_file_and_prediction(
        labeller, labeller2, reviewer, lab_admin, tiny_checkpoint, fresh_database, tmp_path):
    from annotations.models import Adjudication, AuditEvent, Label
    from classifier.models import ModelVersion
    from slides.models import Slide

    cells, _ = _populate(labeller=labeller, labeller2=labeller2, reviewer=reviewer, lab_admin=lab_admin,
                         tiny_checkpoint=tiny_checkpoint)
    assert Label.objects.count() == 3 and Adjudication.objects.count() == 1 and ModelVersion.objects.count() >= 2
    assert Slide.objects.filter(status="signed").count() == 2 and AuditEvent.objects.count() > 10
    out = tmp_path / "backup"
    call_command("backup", str(out))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["database"] == {"engine": "postgresql", "file": "database.pgdump"}
    assert any(k.startswith("models/v2/") for k in manifest["files"]) and any(k.startswith("media/") for k in manifest["files"])

    restored = tmp_path / "restored"
    url = _pg(fresh_database)
    r = _manage("restore", str(out), env=_env(database_url=url, root=restored))
    assert r.returncode == 0, r.stderr
    assert "every checksum verified" in r.stdout

    original, copy = _rows(_pg()), _rows(url)
    assert set(original) == set(copy)
    assert len(original["annotations_label"]) == 3 and len(original["slides_slide"]) == 2
    for table in original:
        assert copy[table] == original[table], f"{table} differs after the restore"
    for tree in ("media", "models"):
        before = _tree(Path(getattr(settings, "MEDIA_ROOT" if tree == "media" else "MODEL_DIR")))
        assert before and _tree(restored / tree) == before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM annotations_auditevent WHERE action = 'backup.restore'").fetchone() == (1,)

    # The active model answers the same on the same cells, from either deployment.
    rel = [Path(c.file.name) for c in cells]
    answers = []
    for root, db_url in ((None, _pg()), (restored, url)):
        media = Path(settings.MEDIA_ROOT) if root is None else root / "media"
        env = _env(database_url=db_url, root=root or tmp_path / "none")
        env.update(MEDIA_ROOT=str(media), MODEL_DIR=str(settings.MODEL_DIR if root is None else root / "models"))
        out_json = tmp_path / f"classify-{len(answers)}.json"
        r = _manage("classify", *[str(media / p) for p in rel], "--model", "active", "--json", str(out_json), env=env)
        assert r.returncode == 0, r.stderr
        data = json.loads(out_json.read_text())
        answers.append((data["model_version"], [{k: v for k, v in row.items() if k != "file"} for row in data["results"]]))
    assert answers[0] == answers[1]
    assert answers[0][0] == ModelVersion.objects.get(status="active").pk and len(answers[0][1]) == len(cells)


def test_a_tampered_backup_is_refused_before_anything_is_written(labeller, fresh_database, tmp_path):
    CellImageFactory(uploaded_by=labeller)
    out = tmp_path / "backup"
    call_command("backup", str(out))
    victim = next((out / "media").rglob("*.png"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    (out / "media" / "extra.txt").write_text("not from the backup")
    restored = tmp_path / "restored"
    r = _manage("restore", str(out), env=_env(database_url=_pg(fresh_database), root=restored))
    assert r.returncode != 0
    assert f"{victim.relative_to(out).as_posix()}: sha256 differs" in r.stderr
    assert "media/extra.txt: not in the manifest" in r.stderr
    assert not (restored / "media").exists()
    with psycopg.connect(_pg(fresh_database)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_restore_refuses_a_deployment_that_is_not_empty(labeller, tmp_path):
    CellImageFactory(uploaded_by=labeller)
    out = tmp_path / "backup"
    call_command("backup", str(out))
    r = _manage("restore", str(out), env=_env(database_url=_pg(), root=tmp_path / "other"))
    assert r.returncode != 0 and "not empty: the database (it has tables)" in r.stderr


def test_backup_refuses_a_folder_that_is_not_empty(labeller, tmp_path):
    from django.core.management.base import CommandError

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(CommandError, match="exists and is not empty"):
        call_command("backup", str(tmp_path / "full"))
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


def test_a_backup_that_fails_is_recorded_audited_and_leaves_no_folder(labeller, tmp_path, monkeypatch):
    from django.core.management.base import CommandError

    from annotations.models import AuditEvent
    from backup.models import BackupRun

    CellImageFactory(uploaded_by=labeller)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no pg_dump on this machine
    with pytest.raises(CommandError, match="pg_dump is not installed"):
        call_command("backup", str(tmp_path / "backup"))
    run = BackupRun.objects.get()
    assert run.status == "failed" and "pg_dump is not installed" in run.error
    assert AuditEvent.objects.get(action="backup.failed").after["error"].startswith("pg_dump is not installed")
    assert not (tmp_path / "backup").exists() and not (tmp_path / "backup.partial").exists()
