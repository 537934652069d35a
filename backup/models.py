from django.db import models


class BackupRun(models.Model):
    """One backup attempt (the nightly task's or the command's): where it went and how it ended.
    The lab admin's home page reads the latest ones (selectors.backup_status)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"

    trigger = models.CharField(max_length=20, default="command")  # command | nightly
    path = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    files = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"backup {self.pk} ({self.status}) {self.path}"
