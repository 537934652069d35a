"""The nightly backup: Celery beat's task on a real worker writes a complete backup under BACKUP_DIR and
keeps BACKUP_KEEP of them; the lab admin's home page shows a failed or missing backup."""
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from backup.manifest import manifest_verify
from backup.models import BackupRun
from backup.services import backup_prune
from tests.factories import CellImageFactory
from tests.helpers import html_element, wait_for


@pytest.fixture
def backup_dir(tmp_path, monkeypatch, settings):
    folder = tmp_path / "nightly"
    monkeypatch.setenv("BACKUP_DIR", str(folder))  # for the worker process, started after this fixture
    settings.BACKUP_DIR = str(folder)
    return folder


@pytest.mark.django_db(transaction=True)
def test_the_nightly_task_on_a_worker_writes_a_verified_backup(backup_dir, celery_worker_process, labeller):
    from backup.tasks import backup_nightly

    CellImageFactory(uploaded_by=labeller)
    backup_nightly.delay()
    wait_for(lambda: BackupRun.objects.exclude(status=BackupRun.Status.RUNNING).exists(), timeout=120,
             message="the nightly backup to finish")
    run = BackupRun.objects.get()
    assert run.status == BackupRun.Status.OK and run.trigger == "nightly", run.error
    folders = [p for p in backup_dir.iterdir()]
    assert [p.name for p in folders] == [run.path.rsplit("/", 1)[1]] and folders[0].name.startswith("leukoportal-")
    manifest = manifest_verify(folders[0])
    assert any(k.startswith("media/") for k in manifest["files"])


def test_retention_keeps_the_newest_complete_backups_and_drops_leftovers(tmp_path):
    for stamp in ("20260101-020000", "20260102-020000", "20260103-020000"):
        (tmp_path / f"leukoportal-{stamp}").mkdir()
        (tmp_path / f"leukoportal-{stamp}" / "MANIFEST.json").write_text("{}")
    (tmp_path / "leukoportal-20260104-020000.partial").mkdir()
    (tmp_path / "unrelated").mkdir()
    removed = backup_prune(folder=tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leukoportal-20260102-020000", "leukoportal-20260103-020000",
                                                          "unrelated"]
    assert len(removed) == 2


def _card(client, user):
    client.force_login(user)
    return html_element(client.get("/").content.decode(), "backup-status")


@pytest.mark.django_db
def test_the_lab_admins_home_page_shows_a_failed_or_missing_backup(client, lab_admin, reviewer, settings, tmp_path):
    settings.BACKUP_DIR = str(tmp_path)
    card = _card(client, lab_admin)
    assert card.attrs["data-state"] == "missing" and "Backup missing." in card.text
    ok = BackupRun.objects.create(path="/b/1", status=BackupRun.Status.OK, size_bytes=10, files=3,
                                  finished_at=timezone.now())
    assert _card(client, lab_admin).attrs["data-state"] == "ok"
    BackupRun.objects.filter(pk=ok.pk).update(finished_at=timezone.now() - timedelta(hours=30))
    assert _card(client, lab_admin).attrs["data-state"] == "missing"
    time.sleep(0.01)
    BackupRun.objects.create(path="/b/2", status=BackupRun.Status.FAILED, error="pg_dump exited with 1: disk full",
                             finished_at=timezone.now())
    card = _card(client, lab_admin)
    assert card.attrs["data-state"] == "failed" and "disk full" in card.text
    assert _card(client, reviewer) is None  # the backup is the lab admin's business
    settings.BACKUP_DIR = ""
    BackupRun.objects.all().delete()
    assert _card(client, lab_admin).attrs["data-state"] == "not_configured"
