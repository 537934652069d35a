"""Enqueue a Celery task after the current transaction commits, without ever waiting on the broker.

The database row is the durable record of the work to do (an image without a prediction, a slide,
training run or evaluation whose state is queued), written in the user's transaction. The message
only says "do it now": it is published once, after the commit, with a short bound and no retries.
When the broker is away the request still succeeds and the sweep (``leukoportal.tasks.sweep``: Celery
beat every minute, and once whenever a worker starts) enqueues again whatever the rows say is missing.
Tasks claim their row with a conditional UPDATE or compute only what is missing, so a message sent
twice is harmless.
"""
from __future__ import annotations

import importlib
import logging
import time

from django.db import transaction

log = logging.getLogger(__name__)

#: Connect, read and write bound of one publish, in seconds (a broker on the same network answers in
#: milliseconds). The publish is tried once: no retries inside a request.
PUBLISH_TIMEOUT_S = 0.5
#: After a failed publish, this process leaves new work to the sweep for this long instead of waiting
#: on the broker again (a zip of 500 images must not wait 500 times).
PAUSE_AFTER_FAILURE_S = 5.0

_paused_until = 0.0


def enqueue_on_commit(task_name: str, *args, link: str | None = None) -> None:
    """After the current transaction commits (at once outside a transaction), publish ``task_name(*args)``
    as :func:`enqueue_now` does. An unknown task name is an error now, in the caller's transaction."""
    _task(task_name)
    if link is not None:
        _task(link)
    transaction.on_commit(lambda: enqueue_now(task_name, *args, link=link))


def enqueue_now(task_name: str, *args, link: str | None = None) -> bool:
    """Publish once, bounded by PUBLISH_TIMEOUT_S. False when the broker could not take it (logged;
    the sweep enqueues the work again from the database). ``link`` names a task that the worker runs
    next, on success, with this task's return value as its only argument (a chain by task name: the
    two apps' tasks never import each other)."""
    global _paused_until
    task = _task(task_name)
    if time.monotonic() < _paused_until:
        log.info("The broker failed a moment ago; %s%r is left to the sweep.", task_name, args)
        return False
    try:
        with _producers().acquire(block=True, timeout=PUBLISH_TIMEOUT_S) as producer:
            task.apply_async(args=args, producer=producer, retry=False,
                             link=_task(link).signature() if link is not None else None)
    except Exception as exc:  # noqa: BLE001 - the broker being away must not fail or hold the user's request
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_S
        log.warning("Could not enqueue %s%r (%s: %s); the sweep will enqueue it again.", task_name, args,
                    type(exc).__name__, exc)
        return False
    return True


def _task(task_name: str):
    """The registered task ``module.function``; its module is imported first (a web process has not
    imported the tasks modules; the import system makes concurrent requests wait for one import)."""
    from leukoportal.celery import app

    importlib.import_module(task_name.rpartition(".")[0])
    try:
        return app.tasks[task_name]
    except KeyError:
        raise KeyError(f"No Celery task is registered under the name {task_name!r}.") from None


def _producers():
    """Producers on connections that try once and give up after PUBLISH_TIMEOUT_S (the workers' and
    beat's own connections keep the settings' longer, retrying options)."""
    from kombu import pools

    from leukoportal.celery import app

    bounded = {"max_retries": 0, "socket_connect_timeout": PUBLISH_TIMEOUT_S, "socket_timeout": PUBLISH_TIMEOUT_S}
    return pools.producers[app.connection_for_write(connect_timeout=PUBLISH_TIMEOUT_S, transport_options=bounded)]
