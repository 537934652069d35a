"""Housekeeping across the apps: the sweep that makes the database, not the broker, the record of work."""
from __future__ import annotations

import logging

from classifier import services as classifier_services
from reports import services as reports_services
from slides import services as slides_services

log = logging.getLogger(__name__)

#: Work queued more recently than this is left alone: its message is probably on its way.
SWEEP_GRACE_S = 120
#: A running slide without progress for this long lost its worker: it is queued again (and resumes).
SLIDE_STALE_S = 300
#: A running training without a heartbeat for this long lost its worker: it is marked failed (retry it).
TRAINING_STALE_S = 600


def work_sweep(*, grace_s: int = SWEEP_GRACE_S, slide_stale_s: int = SLIDE_STALE_S,
               training_stale_s: int = TRAINING_STALE_S) -> dict[str, int]:
    """Enqueue again what the rows say is to do and no message may carry any more, and recover work
    whose worker died. Idempotent: every task claims its row with a conditional UPDATE or computes
    only what is missing, so a message sent twice does nothing the second time. Run by Celery beat
    every minute and once whenever a worker starts. Each step runs even if another fails; a failure
    is raised after all have run."""
    steps = {
        "training_runs_failed_stale": lambda: classifier_services.training_runs_mark_stale(older_than_s=training_stale_s),
        "training_runs_resent": lambda: classifier_services.training_runs_queued_resend(older_than_s=grace_s),
        "slides_resumed": lambda: slides_services.slides_stalled_requeue(older_than_s=slide_stale_s),
        "slides_resent": lambda: slides_services.slides_queued_resend(older_than_s=grace_s),
        "evaluations_resent": lambda: reports_services.evaluations_queued_resend(older_than_s=grace_s),
        "images_resent": lambda: classifier_services.images_unclassified_sweep(older_than_s=grace_s),
    }
    done, failed = {}, []
    for name, step in steps.items():
        try:
            done[name] = step()
        except Exception:  # noqa: BLE001 - one broken step must not stop the others' recovery
            log.exception("Sweep step %s failed", name)
            failed.append(name)
    if any(done.values()):
        log.info("Sweep: %s", ", ".join(f"{k}={v}" for k, v in done.items() if v))
    if failed:
        raise RuntimeError(f"Sweep step(s) failed: {', '.join(failed)} (see the log); the others ran: {done}")
    return done
