"""Demo users and the demo cells shipped in demo/ (idempotent: a second run changes nothing)."""
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from annotations import services
from annotations.models import CellClass, Split
from classifier.models import ModelVersion, TrainingRun
from classifier.services import training_run_start

DEMO_USERS = [("labadmin", "lab_admin"), ("reviewer", "reviewer"), ("labeller", "labeller"), ("labeller2", "labeller")]
HELDOUT_PER_CLASS = 3


def demo_password() -> str:
    return os.environ.get("DEMO_PASSWORD", "leuko-demo-2026")


class Command(BaseCommand):
    help = "Create the demo users and load the demo cells (train + double-read held-out)."

    def add_arguments(self, parser):
        parser.add_argument("--demo-dir", default=str(Path(settings.BASE_DIR) / "demo"))
        parser.add_argument("--train-model", action="store_true", help="Queue a first training run if no model exists.")

    def handle(self, *args, demo_dir, train_model, **options):
        User = get_user_model()
        users = {}
        for username, role in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(demo_password())
                user.is_staff = role == "lab_admin"
                user.save()
            user.groups.add(Group.objects.get(name=role))
            users[username] = user

        cells = Path(demo_dir) / "cells"
        marker = Path(settings.VAR_DIR) / ".demo-loaded"
        if cells.is_dir() and not marker.exists():
            classes = {c.code: c for c in CellClass.objects.all()}
            for folder in sorted(p for p in cells.iterdir() if p.is_dir()):
                files = sorted(folder.iterdir())
                for i, path in enumerate(files):
                    heldout = i >= len(files) - HELDOUT_PER_CLASS
                    outcome = services.image_upload(
                        data=path.read_bytes(), uploaded_by=users["labadmin"],
                        split=Split.HELDOUT if heldout else Split.TRAIN, enqueue_classification=False,
                    )
                    readers = ["labeller", "reviewer"] if heldout else ["labeller"]
                    for reader in readers:
                        if not outcome.image.labels.filter(labeller=users[reader], superseded_at__isnull=True).exists():
                            services.label_submit(image=outcome.image, labeller=users[reader],
                                                  cell_class=classes[folder.name])
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("demo cells loaded\n")

        if train_model:
            busy = TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
            if not ModelVersion.objects.exists() and not busy.exists():
                run = training_run_start(user=users["labadmin"], ensemble="offline", trigger="demo")
                self.stdout.write(f"Queued training run {run.pk} (offline ensemble on the demo cells).")

        self.stdout.write("")
        self.stdout.write("Demo logins (change these before real use):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {role:<10} {username:<10} password: {demo_password()}")
