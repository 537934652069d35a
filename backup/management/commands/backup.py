from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backup.database import DatabaseToolError
from backup.services import BackupRefused, backup_create


class Command(BaseCommand):
    help = ("Write a backup folder OUT (new or empty): the database (PostgreSQL: pg_dump custom format; SQLite: "
            "the online backup API), the media, the model checkpoints, the feature cache's manifest, and "
            "MANIFEST.json with the sha256 of every file. Restore it with `manage.py restore OUT`.")

    def add_arguments(self, parser):
        parser.add_argument("out", type=Path)

    def handle(self, *args, out, **options):
        try:
            run = backup_create(out=out)
        except (BackupRefused, DatabaseToolError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"backup written to {run.path}: {run.files} files, {run.size_bytes} bytes")
