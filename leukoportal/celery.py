import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leukoportal.settings")

app = Celery("leukoportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def sweep_when_a_worker_starts(sender, **kwargs):
    """Work queued while no worker ran, or whose message was lost, is enqueued again at once
    rather than at the next beat (leukoportal.tasks.sweep; it runs on a default-queue worker)."""
    sender.app.send_task("leukoportal.tasks.sweep", expires=300)
    # LIS messages left queued, or "sent" by a worker that died, go out now rather than at beat's next look.
    sender.app.send_task("lis.tasks.deliver_due", expires=300)
