from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backup.database import DatabaseToolError
from backup.manifest import BackupInvalid
from backup.services import BackupRefused, backup_restore


class Command(BaseCommand):
    help = ("Restore a backup folder (made by `manage.py backup`) into this deployment, which must be empty: a "
            "database without tables, empty MEDIA_ROOT and MODEL_DIR. Every file's sha256 is checked against "
            "the manifest before anything is written and again after copying; the database is then migrated "
            "to this release. The feature cache is recomputed when needed.")

    def add_arguments(self, parser):
        parser.add_argument("src", type=Path, metavar="IN")

    def handle(self, *args, src, **options):
        try:
            summary = backup_restore(src=src)
        except (BackupRefused, BackupInvalid, DatabaseToolError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"restored {summary['database']} database and {summary['files']} files from {src} "
                          f"(backup of {summary['created_at']}); every checksum verified")
