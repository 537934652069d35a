"""Fault scenarios on the private stack. Each returns a Result: survived, items lost, and figures.

Used once each by tests/faults/test_faults.py and repeatedly by benchmarks/faults.py. Every wait is
a generous deadline on an outcome the scenario observes in the database or over HTTP, never a
fixed sleep, so that the scenarios hold on a machine whose cores are busy with other work.
"""
from __future__ import annotations

import http.client
import io
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field

from .stack import Stack, wait_until

_seed = itertools.count(int(time.time()) % 10_000 * 100)

#: How long a client waits for an answer before it calls the request hung (a deadline, not a figure:
#: the figures are the measured durations in each Result).
CLIENT_TIMEOUT_S = 120.0
#: Deadline for work the workers do after a fault (classify, train, process a slide).
WORK_DEADLINE_S = 600.0


@dataclass
class Result:
    name: str
    survived: bool
    lost: int
    detail: dict = field(default_factory=dict)


# --- a tiny HTTP client (stdlib only) -----------------------------------------------------------
class HttpError(Exception):
    pass


def call(port: int, method: str, path: str, *, token: str, body=None, files=None, timeout: float = CLIENT_TIMEOUT_S):
    """(status, parsed JSON or text). Raises HttpError on a connection error, TimeoutError on a hang."""
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    payload = None
    if files is not None:
        boundary = uuid.uuid4().hex
        out = io.BytesIO()
        for name, value in (body or {}).items():
            out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, (filename, data) in files.items():
            out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
        payload = out.getvalue()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except TimeoutError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise HttpError(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def _png(seed: int) -> bytes:
    from tests.faults.agent import _cell_png

    return _cell_png(seed % 2, seed)


def _count(stack: Stack, sql: str, *params) -> int:
    return stack.pg.sql(sql, list(params))[0][0]


def _predicted(stack: Stack, ids: list[int], version: int) -> int:
    return _count(stack, "SELECT count(DISTINCT image_id) FROM classifier_prediction "
                         "WHERE image_id = ANY(%s) AND model_version_id = %s", ids, version)


def _duplicates(stack: Stack, ids: list[int]) -> int:
    return _count(stack, "SELECT count(*) FROM (SELECT image_id, model_version_id FROM classifier_prediction "
                         "WHERE image_id = ANY(%s) GROUP BY 1, 2 HAVING count(*) > 1) d", ids)


def _ensure_worker(stack: Stack):
    if stack.worker is None or stack.worker.poll() is not None:
        stack.start_worker()


# --- 1. kill -9 the ML worker in the middle of a batch of inference --------------------------------
def inference_worker_killed(stack: Stack, *, n: int = 40) -> Result:
    _ensure_worker(stack)
    ids = stack.agent("images", n=n, seed=next(_seed))
    version = stack.agent("active")
    # Queue the batches in the background and watch the database meanwhile, so the kill lands mid-batch.
    sender = stack.agent_background("classify", ids=ids, per_task=4)
    wait_until(lambda: _predicted(stack, ids, version) >= 1, WORK_DEADLINE_S, "the first predictions", interval=0.05)
    stack.kill_worker()
    at_kill = _predicted(stack, ids, version)
    sender.wait(timeout=WORK_DEADLINE_S)
    stack.start_worker()
    stack.agent("sweep")  # the beat's sweep: resend what the killed worker held
    try:
        wait_until(lambda: _predicted(stack, ids, version) == n, WORK_DEADLINE_S, "every cell classified", interval=0.5)
    except TimeoutError:
        pass
    done = _predicted(stack, ids, version)
    duplicates = _duplicates(stack, ids)
    return Result("kill -9 ML worker during inference", survived=done == n and duplicates == 0,
                  lost=n - done, detail={"cells": n, "classified_when_killed": at_kill, "duplicates": duplicates,
                                         "mid_batch": 0 < at_kill < n})


# --- 2. kill -9 the ML worker in the middle of a training run --------------------------------------
def _run_row(stack: Stack, run_id: int):
    return stack.pg.sql("SELECT status, progress, error FROM classifier_trainingrun WHERE id = %s", [run_id])[0]


def training_worker_killed(stack: Stack) -> Result:
    _ensure_worker(stack)
    active_before = stack.agent("active")
    stack.agent("images", n=16, seed=next(_seed), labelled=True)
    run_id = stack.agent("training", epochs=400)

    def training_under_way():
        status, progress, _ = _run_row(stack, run_id)
        return status != "queued" and (progress or {}).get("stage") not in (None, "queued", "snapshot")

    wait_until(training_under_way, WORK_DEADLINE_S, "the training run to reach its features", interval=0.05)
    stage = (_run_row(stack, run_id)[1] or {}).get("stage")
    stack.kill_worker()
    stack.start_worker()
    # The killed worker writes no heartbeat any more, so every heartbeat is older than now.
    marked = stack.agent("mark_stale", older_than_s=0)
    status, _, error = _run_row(stack, run_id)
    active_after = stack.agent("active")
    versions_active = _count(stack, "SELECT count(*) FROM classifier_modelversion WHERE status = 'active'")
    # the work completes after the restart: the retried run trains to the end
    retry_id = stack.agent("training", epochs=2, retry_of=run_id)
    try:
        wait_until(lambda: _run_row(stack, retry_id)[0] in ("succeeded", "failed"), WORK_DEADLINE_S, "the retried run",
                   interval=0.5)
    except TimeoutError:
        pass
    retry_status = _run_row(stack, retry_id)[0]
    survived = (status == "failed" and "worker stopped" in error and active_after == active_before
                and versions_active == 1 and retry_status == "succeeded")
    return Result("kill -9 ML worker during training", survived=survived, lost=0 if retry_status == "succeeded" else 1,
                  detail={"stage_when_killed": stage, "marked_failed": marked, "status": status,
                          "active_unchanged": active_after == active_before, "retry": retry_status})


# --- 3. Redis stopped while users upload and label ------------------------------------------------
def _upload_and_label(port: int, labellers: list, per_user: int) -> list[dict]:
    """Each labeller uploads ``per_user`` cells and labels each, in parallel; one outcome per pair."""
    outcomes, lock = [], threading.Lock()

    def expert(user, seeds):
        for s in seeds:
            started = time.perf_counter()
            outcome = {"user": user["id"], "upload": None, "label": None, "image": None, "upload_s": None}
            try:
                code, body = call(port, "POST", "/api/images/", token=user["token"], files={"file": ("c.png", _png(s))})
                outcome["upload_s"] = time.perf_counter() - started
                outcome["upload"] = code
                if code in (200, 201):
                    outcome["image"] = body["id"]
                    label_started = time.perf_counter()
                    outcome["label"], _ = call(port, "POST", "/api/labels/", token=user["token"],
                                               body={"image": body["id"], "cell_class": "lymphocyte"})
                    outcome["label_s"] = time.perf_counter() - label_started
            except (HttpError, TimeoutError) as exc:
                outcome["upload"] = outcome["upload"] or f"{type(exc).__name__}: {exc}"
            # the slowest single request of the pair (the whole pair when one of them failed)
            outcome["s"] = (max(outcome["upload_s"], outcome["label_s"]) if "label_s" in outcome
                            else time.perf_counter() - started)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=expert, args=(u, [next(_seed) for _ in range(per_user)])) for u in labellers]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return outcomes


def prepare(stack: Stack, *, prefix: str) -> None:
    """Ready the stack for the scenarios: a tiny active model, API users (4 labellers and 2
    reviewers, named after ``prefix``) in ``stack.users``, the worker and gunicorn started, warmed up."""
    stack.agent("model")
    stack.users = stack.agent("users", labellers=4, reviewers=2, prefix=prefix)
    stack.start_worker()
    stack.start_web()
    warm_up(stack, users=stack.users)


def warm_up(stack: Stack, *, users: dict) -> None:
    """One upload and label per labeller, not measured: the web workers' first requests open their
    database connections and broker pools."""
    port = stack.web_port or stack.start_web()
    _upload_and_label(port, [u for u in users.values() if u["role"] == "labeller"], 1)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation (as numpy's default)."""
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def redis_outage(stack: Stack, *, users: dict, per_user: int = 3) -> Result:
    """The same uploads and labels with Redis up, then with Redis killed: every request is answered and
    saved, an upload waits on the broker no longer than the publish bound, and every cell is classified
    once Redis is back (the sweep enqueues what could not be sent)."""
    _ensure_worker(stack)
    port = stack.web_port or stack.start_web()
    labellers = [u for u in users.values() if u["role"] == "labeller"]
    version = stack.agent("active")
    if not stack.redis.running():
        stack.redis.start()
    up = _upload_and_label(port, labellers, per_user)
    stack.redis.kill()
    try:
        down = _upload_and_label(port, labellers, per_user)
    finally:
        stack.redis.start()
    outcomes = up + down
    acknowledged = [o for o in outcomes if o["upload"] in (200, 201) and o["label"] == 201]
    ids = [o["image"] for o in acknowledged]
    stored = _count(stack, "SELECT count(*) FROM annotations_cellimage WHERE id = ANY(%s)", ids)
    labelled = _count(stack, "SELECT count(DISTINCT image_id) FROM annotations_label WHERE image_id = ANY(%s) "
                             "AND superseded_at IS NULL", ids)
    stack.agent("sweep")  # the beat's sweep, once Redis is back
    try:
        wait_until(lambda: _predicted(stack, ids, version) == len(ids), WORK_DEADLINE_S,
                   "classification after Redis returned", interval=0.5)
    except TimeoutError:
        pass
    classified = _predicted(stack, ids, version)
    lost = (len(outcomes) - len(acknowledged)) + (len(ids) - stored) + (len(ids) - labelled) + (len(ids) - classified)
    upload_up = [o["upload_s"] for o in up if o["upload_s"] is not None]
    upload_down = [o["upload_s"] for o in down if o["upload_s"] is not None]
    return Result("Redis down during uploads and labels", survived=lost == 0, lost=lost,
                  detail={"requests": len(outcomes) * 2, "accepted": len(acknowledged) * 2, "classified_after": classified,
                          "upload_s_up": upload_up, "upload_s_down": upload_down,
                          "upload_p50_up": round(percentile(upload_up, 50), 3),
                          "upload_p50_down": round(percentile(upload_down, 50), 3),
                          "slowest_s": round(max(o["s"] for o in outcomes), 2),
                          "refused": [o["upload"] for o in outcomes if o not in acknowledged][:3]})


# --- 4. PostgreSQL restarted under load ----------------------------------------------------------
def postgres_restart(stack: Stack, *, users: dict, cells: int = 30, hang_s: float = CLIENT_TIMEOUT_S) -> Result:
    port = stack.web_port or stack.start_web()
    labellers = [u for u in users.values() if u["role"] == "labeller"]
    ids = stack.agent("images", n=cells, seed=next(_seed))
    work = [(u, pk) for u in labellers for pk in ids]
    chunks = [work[i :: 6] for i in range(6)]
    stats = {"ok": 0, "clean_errors": 0, "hangs": 0, "bad": [], "slowest_s": 0.0}
    acknowledged, lock = [], threading.Lock()
    deadline = time.time() + WORK_DEADLINE_S
    restarted = threading.Event()

    def client(pairs):
        for user, pk in pairs:
            while time.time() < deadline:
                started = time.perf_counter()
                try:
                    code, body = call(port, "POST", "/api/labels/", token=user["token"],
                                      body={"image": pk, "cell_class": "monocyte"}, timeout=hang_s)
                except TimeoutError:
                    with lock:
                        stats["hangs"] += 1
                    continue
                except HttpError:
                    with lock:
                        stats["clean_errors"] += 1
                    time.sleep(0.2)  # a client's pause before it tries again
                    continue
                finally:
                    with lock:
                        stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - started)
                if code == 201:
                    with lock:
                        stats["ok"] += 1
                        acknowledged.append((user["id"], pk))
                    break
                if code >= 500:
                    with lock:
                        stats["clean_errors"] += 1
                    time.sleep(0.2)
                    continue
                with lock:
                    stats["bad"].append((code, str(body)[:200]))
                break
            time.sleep(0.02 if restarted.is_set() else 0.05)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    [t.start() for t in threads]
    wait_until(lambda: stats["ok"] >= 10, WORK_DEADLINE_S, "load to build up", interval=0.05)
    t0 = time.time()
    stack.pg.restart("fast")
    gap = time.time() - t0
    restarted.set()
    [t.join() for t in threads]
    after = [call(port, "GET", "/api/queues/", token=labellers[0]["token"])[0] for _ in range(5)]
    found = 0
    for user_id, pk in acknowledged:
        found += _count(stack, "SELECT count(*) FROM annotations_label WHERE image_id = %s AND labeller_id = %s "
                               "AND superseded_at IS NULL", pk, user_id)
    lost = len(work) - found
    survived = lost == 0 and stats["hangs"] == 0 and not stats["bad"] and all(c == 200 for c in after)
    return Result("PostgreSQL restart under load", survived=survived, lost=lost,
                  detail={"labels": len(work), "acknowledged": len(acknowledged), "clean_errors": stats["clean_errors"],
                          "hangs": stats["hangs"], "unexpected": stats["bad"][:3], "restart_s": round(gap, 2),
                          "recovered": all(c == 200 for c in after), "slowest_s": round(stats["slowest_s"], 2)})


# --- 5. two reviewers adjudicating the same cell at once ------------------------------------------
def concurrent_adjudication(stack: Stack, *, users: dict, cells: int = 5) -> Result:
    port = stack.web_port or stack.start_web()
    reviewers = [u for u in users.values() if u["role"] == "reviewer"][:2]
    ids = stack.agent("review_cells", n=cells, seed=next(_seed))
    wrong, durations = [], []
    for pk in ids:
        barrier, answers = threading.Barrier(2), []

        def decide(user, code):
            barrier.wait()
            started = time.perf_counter()
            answers.append(call(port, "POST", "/api/adjudications/", token=user["token"],
                                body={"image": pk, "cell_class": code, "note": "concurrent"}))
            durations.append(time.perf_counter() - started)

        threads = [threading.Thread(target=decide, args=(reviewers[0], "monocyte")),
                   threading.Thread(target=decide, args=(reviewers[1], "lymphocyte"))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        codes = sorted(code for code, _ in answers)
        told = [body for code, body in answers if code == 409]
        if codes != [201, 409] or not told or "adjudicated" not in told[0].get("detail", ""):
            wrong.append({"image": pk, "answers": answers})
    per_image = stack.pg.sql("SELECT image_id, count(*) FROM annotations_adjudication WHERE image_id = ANY(%s) "
                             "GROUP BY image_id", [ids])
    lost = cells - sum(1 for _, c in per_image if c == 1)
    return Result("two reviewers adjudicate one cell", survived=not wrong and lost == 0, lost=lost,
                  detail={"cells": cells, "wrong": wrong[:2], "slowest_s": round(max(durations), 2)})


# --- 6. kill -9 the ML worker while it processes a slide -------------------------------------------
def _slide_row(stack: Stack, slide_id: int):
    return stack.pg.sql("SELECT task_state, progress, error FROM slides_slide WHERE id = %s", [slide_id])[0]


def _field_cells(stack: Stack, slide_id: int) -> dict:
    """{field id: (detected, n_cells, sorted cell ids)} of a slide."""
    rows = stack.pg.sql("SELECT f.id, f.detected, f.n_cells, coalesce(array_agg(c.id ORDER BY c.id) "
                        "FILTER (WHERE c.id IS NOT NULL), '{}') FROM slides_slidefield f "
                        "LEFT JOIN slides_slidecell c ON c.field_id = f.id WHERE f.slide_id = %s GROUP BY f.id",
                        [slide_id])
    return {field: (detected, n_cells, list(cells)) for field, detected, n_cells, cells in rows}


def slide_worker_killed(stack: Stack, *, fields: int = 16) -> Result:
    """kill -9 the worker in the middle of a slide's processing: the sweep queues the slide again and
    it resumes; the fields detected before the kill keep their cells, none is detected twice."""
    _ensure_worker(stack)
    slide_id = stack.agent("slide", fields=fields, code=f"FLT-{next(_seed)}")

    def under_way():
        return any(detected for detected, _, _ in _field_cells(stack, slide_id).values())

    wait_until(under_way, WORK_DEADLINE_S, "the first field detected", interval=0.05)
    stack.kill_worker()
    at_kill = _field_cells(stack, slide_id)
    state_at_kill = _slide_row(stack, slide_id)[0]
    stack.start_worker()
    # The killed worker shows no progress any more: the sweep, with no wait for staleness, queues it again.
    swept = stack.agent("sweep", slide_stale_s=0)
    try:
        wait_until(lambda: _slide_row(stack, slide_id)[0] in ("done", "failed"), WORK_DEADLINE_S,
                   "the slide processed after the restart", interval=0.5)
    except TimeoutError:
        pass
    state, _, error = _slide_row(stack, slide_id)
    after = _field_cells(stack, slide_id)
    kept = all(after[f][2] == cells for f, (detected, _, cells) in at_kill.items() if detected)
    consistent = all(detected and n_cells == len(cells) for detected, n_cells, cells in after.values())
    unclassified = _count(stack, "SELECT count(*) FROM slides_slidecell WHERE slide_id = %s AND detector_kind = 'wbc' "
                                 "AND predicted_class = ''", slide_id)
    survived = state == "done" and kept and consistent and unclassified == 0
    return Result("kill -9 ML worker during a slide", survived=survived,
                  lost=sum(1 for detected, _, _ in after.values() if not detected) + unclassified,
                  detail={"fields": fields, "detected_when_killed": sum(d for d, _, _ in at_kill.values()),
                          "state_when_killed": state_at_kill, "resumed": swept.get("slides_resumed"),
                          "state": state, "error": error[:200], "kept_cells": kept, "consistent": consistent,
                          "unclassified": unclassified})
