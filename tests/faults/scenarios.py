"""Fault scenarios on the private stack. Each returns a Result: survived, items lost, and figures.

Used once each by tests/faults/test_faults.py and repeatedly by benchmarks/faults.py.
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


@dataclass
class Result:
    name: str
    survived: bool
    lost: int
    detail: dict = field(default_factory=dict)


# --- a tiny HTTP client (stdlib only) -----------------------------------------------------------
class HttpError(Exception):
    pass


def call(port: int, method: str, path: str, *, token: str, body=None, files=None, timeout: float = 20.0):
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
    wait_until(lambda: _predicted(stack, ids, version) >= 1, 180, "the first predictions", interval=0.05)
    stack.kill_worker()
    at_kill = _predicted(stack, ids, version)
    sender.wait(timeout=120)
    stack.start_worker()
    stack.agent("sweep")  # the beat task: resend what the killed worker held
    try:
        wait_until(lambda: _predicted(stack, ids, version) == n, 240, "every cell classified", interval=0.5)
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
    wait_until(lambda: _run_row(stack, run_id)[0] == "running", 180, "the training run to start", interval=0.05)
    time.sleep(0.3)
    stage = (_run_row(stack, run_id)[1] or {}).get("stage")
    stack.kill_worker()
    time.sleep(1.5)
    stack.start_worker()
    marked = stack.agent("mark_stale", older_than_s=1)
    status, _, error = _run_row(stack, run_id)
    active_after = stack.agent("active")
    versions_active = _count(stack, "SELECT count(*) FROM classifier_modelversion WHERE status = 'active'")
    # the work completes after the restart: the retried run trains to the end
    retry_id = stack.agent("training", epochs=2, retry_of=run_id)
    try:
        wait_until(lambda: _run_row(stack, retry_id)[0] in ("succeeded", "failed"), 300, "the retried run", interval=0.5)
    except TimeoutError:
        pass
    retry_status = _run_row(stack, retry_id)[0]
    survived = (status == "failed" and "worker stopped" in error and active_after == active_before
                and versions_active == 1 and retry_status == "succeeded")
    return Result("kill -9 ML worker during training", survived=survived, lost=0 if retry_status == "succeeded" else 1,
                  detail={"stage_when_killed": stage, "marked_failed": marked, "status": status,
                          "active_unchanged": active_after == active_before, "retry": retry_status})


# --- 3. Redis stopped while users upload and label ------------------------------------------------
def redis_outage(stack: Stack, *, users: dict, per_user: int = 3) -> Result:
    _ensure_worker(stack)
    port = stack.web_port or stack.start_web()
    labellers = [u for u in users.values() if u["role"] == "labeller"]
    version = stack.agent("active")
    stack.redis.kill()
    outcomes, lock = [], threading.Lock()

    def expert(user, seeds):
        for s in seeds:
            started = time.time()
            try:
                code, body = call(port, "POST", "/api/images/", token=user["token"], files={"file": ("c.png", _png(s))})
                ok_upload = code in (200, 201)
                label_code = None
                if ok_upload:
                    label_code, _ = call(port, "POST", "/api/labels/", token=user["token"],
                                         body={"image": body["id"], "cell_class": "lymphocyte"})
                with lock:
                    outcomes.append({"user": user["id"], "upload": code, "label": label_code,
                                     "image": body.get("id") if ok_upload else None, "s": time.time() - started})
            except (HttpError, TimeoutError) as exc:
                with lock:
                    outcomes.append({"user": user["id"], "upload": str(exc), "label": None, "image": None,
                                     "s": time.time() - started})

    threads = [threading.Thread(target=expert, args=(u, [next(_seed) for _ in range(per_user)])) for u in labellers]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stack.redis.start()
    acknowledged = [o for o in outcomes if o["upload"] in (200, 201) and o["label"] == 201]
    ids = [o["image"] for o in acknowledged]
    stored = _count(stack, "SELECT count(*) FROM annotations_cellimage WHERE id = ANY(%s)", ids)
    labelled = _count(stack, "SELECT count(DISTINCT image_id) FROM annotations_label WHERE image_id = ANY(%s) "
                             "AND superseded_at IS NULL", ids)
    stack.agent("sweep")
    try:
        wait_until(lambda: _predicted(stack, ids, version) == len(ids), 240, "classification after Redis returned",
                   interval=0.5)
    except TimeoutError:
        pass
    classified = _predicted(stack, ids, version)
    expected = len(labellers) * per_user
    lost = (expected - len(acknowledged)) + (len(ids) - stored) + (len(ids) - labelled) + (len(ids) - classified)
    return Result("Redis down during uploads and labels", survived=lost == 0, lost=lost,
                  detail={"requests": expected * 2, "accepted": len(acknowledged) * 2, "classified_after": classified,
                          "slowest_s": round(max(o["s"] for o in outcomes), 2)})


# --- 4. PostgreSQL restarted under load ----------------------------------------------------------
def postgres_restart(stack: Stack, *, users: dict, cells: int = 30, hang_s: float = 15.0) -> Result:
    port = stack.web_port or stack.start_web()
    labellers = [u for u in users.values() if u["role"] == "labeller"]
    ids = stack.agent("images", n=cells, seed=next(_seed))
    work = [(u, pk) for u in labellers for pk in ids]
    chunks = [work[i :: 6] for i in range(6)]
    stats = {"ok": 0, "clean_errors": 0, "hangs": 0, "bad": []}
    acknowledged, lock = [], threading.Lock()
    deadline = time.time() + 180
    restarted = threading.Event()

    def client(pairs):
        for user, pk in pairs:
            while time.time() < deadline:
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
                    time.sleep(0.2)
                    continue
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
    wait_until(lambda: stats["ok"] >= 10, 60, "load to build up", interval=0.05)
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
                          "recovered": all(c == 200 for c in after)})


# --- 5. two reviewers adjudicating the same cell at once ------------------------------------------
def concurrent_adjudication(stack: Stack, *, users: dict, cells: int = 5) -> Result:
    port = stack.web_port or stack.start_web()
    reviewers = [u for u in users.values() if u["role"] == "reviewer"][:2]
    ids = stack.agent("review_cells", n=cells, seed=next(_seed))
    wrong = []
    for pk in ids:
        barrier, answers = threading.Barrier(2), []

        def decide(user, code):
            barrier.wait()
            answers.append(call(port, "POST", "/api/adjudications/", token=user["token"],
                                body={"image": pk, "cell_class": code, "note": "concurrent"}))

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
                  detail={"cells": cells, "wrong": wrong[:2]})
