from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import BackupRun


@dataclass(frozen=True)
class BackupStatus:
    state: str  # ok | failed | missing | not_configured
    message: str
    last_ok: BackupRun | None
    last: BackupRun | None


def backup_status() -> BackupStatus:
    """What the lab admin's home page says about backups: the latest attempt failed, no complete
    backup within BACKUP_MAX_AGE_HOURS (missing), fine, or no nightly backup configured."""
    last = BackupRun.objects.exclude(status=BackupRun.Status.RUNNING).first()
    last_ok = BackupRun.objects.filter(status=BackupRun.Status.OK).first()
    max_age = timedelta(hours=settings.BACKUP_MAX_AGE_HOURS)
    if last is not None and last.status == BackupRun.Status.FAILED:
        return BackupStatus("failed", f"The last backup failed: {last.error[:300]}", last_ok, last)
    if not settings.BACKUP_DIR:
        return BackupStatus("not_configured", "No nightly backup is configured (BACKUP_DIR is not set).", last_ok, last)
    if last_ok is None or last_ok.finished_at < timezone.now() - max_age:
        return BackupStatus("missing", f"No complete backup in the last {settings.BACKUP_MAX_AGE_HOURS} hours.",
                            last_ok, last)
    return BackupStatus("ok", "Backed up.", last_ok, last)
