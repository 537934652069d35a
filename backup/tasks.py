from celery import shared_task

from .services import backup_nightly as _backup_nightly


@shared_task(name="backup.nightly", acks_late=False)
def backup_nightly() -> int:
    """Celery beat's nightly backup (settings: BACKUP_DIR, BACKUP_HOUR, BACKUP_KEEP). Not acknowledged
    late: a backup that died half-way is not run again by another worker; the next night's runs."""
    return _backup_nightly().pk
