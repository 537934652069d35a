"""Faults, with a real Celery worker on the test broker and database: the LIS down while 20 slides are
signed (all 20 delivered once each, in order, when it comes back); a worker killed while it waits for
the LIS's answer (nothing lost: the message goes again with the same control ID)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from lis.models import OutboxMessage
from tests.conftest import REPO, _worker_env
from tests.lis.conftest import mllp_destination, signed

pytestmark = pytest.mark.django_db(transaction=True)


def start_worker(settings, log_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "leukoportal", "worker", "-Q", "default", "-c", "1", "-P", "solo",
         "--without-mingle", "--without-gossip", "-l", "INFO", "-n", f"lis-{os.getpid()}-{time.time_ns()}@%h"],
        cwd=REPO, env=_worker_env(settings), stdout=log_path.open("a"), stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.time() + 60
    while "ready" not in log_path.read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("Celery worker did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.3)
    return proc


def stop_worker(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def wait_for(predicate, timeout, what, log_path=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + ("\n" + log_path.read_text()[-3000:] if log_path else ""))


@pytest.fixture
def worker_log(tmp_path, broker):
    from leukoportal.celery import app

    app.control.purge()
    return tmp_path / "worker.log"


def test_the_lis_down_while_20_slides_are_signed_gets_all_20_once_and_in_order_when_back(
        reviewer, mllp_lis, settings, worker_log):
    destination = mllp_destination(mllp_lis.port, max_attempts=1000, backoff_s=0.3, backoff_max_s=1.0)
    mllp_lis.stop()
    worker = start_worker(settings, worker_log)
    try:
        codes = [f"DOWN-{i:04d}" for i in range(1, 21)]
        for code in codes:
            signed(code, by=reviewer)
        wait_for(lambda: OutboxMessage.objects.filter(attempts__gte=2).exists(), 30, "retries while the LIS is down",
                 worker_log)
        assert not OutboxMessage.objects.filter(state="acknowledged").exists()
        mllp_lis.start()
        wait_for(lambda: OutboxMessage.objects.filter(state="acknowledged").count() == 20, 90,
                 "all 20 acknowledged", worker_log)
    finally:
        stop_worker(worker)
    assert mllp_lis.filler_orders() == [f"{code}/v1" for code in codes]  # in the order they were signed
    sent = mllp_lis.control_ids()
    assert len(sent) == len(set(sent)) == 20  # each once
    assert set(sent) == set(OutboxMessage.objects.filter(destination=destination).values_list("control_id", flat=True))


def test_a_worker_killed_while_waiting_for_the_ack_loses_nothing(reviewer, mllp_lis, settings, worker_log):
    from lis.tasks import deliver_due

    mllp_destination(mllp_lis.port, timeout_s=3.0, max_attempts=10, backoff_s=0.3, backoff_max_s=1.0)
    mllp_lis.mode = "silent"
    worker = start_worker(settings, worker_log)
    try:
        signed("KILL-0001", by=reviewer)
        wait_for(lambda: len(mllp_lis.received) == 1, 30, "the message on the wire", worker_log)
        assert OutboxMessage.objects.get().state == "sent"
    finally:
        stop_worker(worker, signal.SIGKILL)  # mid-delivery: claimed, sent, its answer not yet read
    message = OutboxMessage.objects.get()
    assert message.state == "sent" and message.attempts == 1
    mllp_lis.mode = "AA"
    worker = start_worker(settings, worker_log)
    try:
        # Beat's backstop (every 30 s in production) finds the message the dead worker left "sent" once
        # that worker's hold on the destination has expired.
        deadline = time.time() + 60
        while OutboxMessage.objects.get().state != "acknowledged" and time.time() < deadline:
            deliver_due.delay()
            time.sleep(2)
    finally:
        stop_worker(worker)
    message.refresh_from_db()
    assert message.state == "acknowledged" and message.attempts == 2, worker_log.read_text()[-3000:]
    assert mllp_lis.control_ids() == [message.control_id] * 2  # the same message again, not a new result
    assert OutboxMessage.objects.count() == 1


def test_beat_looks_for_due_retries_every_30_seconds():
    """Beat's backstop: when it starts, the settings' schedule becomes a row of django-celery-beat's table."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from leukoportal.celery import app

    DatabaseScheduler(app=app)
    task = PeriodicTask.objects.get(task="lis.tasks.deliver_due")
    assert task.enabled and task.interval.every == 30 and task.interval.period == "seconds"
    app.loader.import_default_modules()
    assert {"lis.tasks.deliver", "lis.tasks.deliver_due"} <= set(app.tasks)
