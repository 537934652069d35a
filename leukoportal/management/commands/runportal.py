"""Run the whole portal on one machine: web server, one Celery worker for every queue, Celery beat
(which runs the sweep every minute; the worker also runs it once when it starts) and the LIS order
listener (``manage.py lis_listen`` on LIS_LISTEN_HOST:LIS_LISTEN_PORT, 127.0.0.1:2575 by default).

DEBUG stays off: static files are collected and served by WhiteNoise as in production, errors get
the portal's own pages. The web server speaks plain HTTP on this machine, so its children run
without the HTTPS redirect and secure-only cookies unless the environment says otherwise.
Ctrl-C (or SIGTERM) stops every child.
"""
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from classifier.services import training_runs_mark_stale
from slides.services import slides_stalled_requeue


class Command(BaseCommand):
    help = "Migrate, seed the demo, then run web + Celery worker + Celery beat + the LIS listener until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-demo", action="store_true")

    def handle(self, *args, addrport, no_demo, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", verbosity=0, interactive=False)
        call_command("collectstatic", verbosity=0, interactive=False)
        # Nothing runs before this command starts its worker: work still "running" was interrupted.
        interrupted = training_runs_mark_stale(older_than_s=0)
        if interrupted:
            self.stdout.write(f"Marked {interrupted} interrupted training run(s) as failed (they can be retried).")
        resumed = slides_stalled_requeue(older_than_s=0)
        if resumed:
            self.stdout.write(f"Queued again {resumed} interrupted slide processing(s); they resume where they stopped.")
        if not no_demo:
            call_command("seed_demo", train_model=True)
        db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
        self.stdout.write(f"Database: {db}; Celery broker: {broker}; data under {settings.VAR_DIR}")

        py = sys.executable
        celery = [py, "-m", "celery", "-A", "leukoportal"]
        children = {
            "web": [py, "manage.py", "runserver", addrport, "--noreload"],
            "worker": celery + ["worker", "-Q", "default,inference,training", "-c", "1", "-l", "INFO",
                                "-n", "portal@%h"],
            "beat": celery + ["beat", "-l", "INFO", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")],
            "lis": [py, "manage.py", "lis_listen"],
        }
        env = os.environ.copy()
        host = addrport.rsplit(":", 1)[0] if ":" in addrport else "127.0.0.1"
        for name, value in (("SECURE_SSL_REDIRECT", "false"), ("SESSION_COOKIE_SECURE", "false"),
                            ("CSRF_COOKIE_SECURE", "false"), ("ALLOWED_HOSTS", f"{host},127.0.0.1,localhost")):
            env.setdefault(name, value)
        procs = {}
        for name, cmd in children.items():
            procs[name] = subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env, start_new_session=True)
        self.stdout.write(self.style.SUCCESS(f"LeukoPortal is running on http://{addrport}/  (Ctrl-C stops it)"))

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with code {proc.returncode}; stopping the portal.")
                        stopping = True
                time.sleep(0.5)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.time() + 15
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            self.stdout.write("Stopped web, worker and beat.")
