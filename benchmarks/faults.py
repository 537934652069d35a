#!/usr/bin/env python
"""Fault-injection benchmark: every scenario of tests/faults repeated, on a quiet machine and then with
every core kept busy by a CPU hog that the benchmark starts and stops itself; survived/total, items
lost, the slowest request, and the upload latency with Redis up and with Redis down.

Usage (from the repo root)::

    .venv/bin/python benchmarks/faults.py                      # each scenario 5 times, quiet then hog
    .venv/bin/python benchmarks/faults.py --passes hog --repeat 3 --only redis,postgres

Everything runs on a private stack started for the run (its own PostgreSQL cluster, Redis,
Celery worker and gunicorn on free loopback ports; tests/faults/stack.py), so the machine's
shared services are never stopped. Scenarios:

* inference  kill -9 the ML worker in the middle of a batch of classification; restart it; the
             sweep resends; every cell gets exactly one prediction from the active version.
* training   kill -9 the ML worker during a training run; the run is marked failed by the stale
             check, the active model is unchanged; a retried run trains to the end.
* slide      kill -9 the ML worker while it processes a slide; the sweep queues the slide again and
             it resumes: the fields detected before the kill keep their cells, every cell is classified.
* redis      experts upload and label over HTTP with Redis up, then with Redis killed: every request
             is answered and saved; cells are classified after Redis returns. The upload latency of
             the two phases is the "Redis up / Redis down" table (targets: p95 down <= 2 x p95 up).
* postgres   PostgreSQL restarted while experts label over HTTP: errors during the gap are clean
             (a 5xx or a refused connection, never a hang); clients retry; no label lost.
* adjudicate two reviewers post the final decision on the same cell at the same instant over
             HTTP: exactly one wins, the other gets 409 with the reason.

"lost" counts items a user was told were saved (or that must be processed) and are not. The
quiet pass is the baseline of the hog pass; Redis up is the baseline of Redis down. Target in
both passes: 0 lost and no request over 5 s.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults import scenarios  # noqa: E402
from tests.faults.stack import Stack  # noqa: E402

SCENARIOS = {
    "inference": lambda stack: scenarios.inference_worker_killed(stack),
    "training": lambda stack: scenarios.training_worker_killed(stack),
    "slide": lambda stack: scenarios.slide_worker_killed(stack),
    "redis": lambda stack: scenarios.redis_outage(stack, users=stack.users),
    "postgres": lambda stack: scenarios.postgres_restart(stack, users=stack.users),
    "adjudicate": lambda stack: scenarios.concurrent_adjudication(stack, users=stack.users),
}
SLOW_REQUEST_S = 5.0
MAX_P95_RATIO = 2.0


class CpuHog:
    """One busy-loop process per core, started and stopped by the benchmark."""

    def __init__(self, processes: int):
        self.processes = processes
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                      for _ in range(self.processes)]
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        self.procs = []


def run_pass(stack: Stack, names: list[str], repeat: int, verbose: bool) -> tuple[list[tuple], dict]:
    rows, uploads = [], {"up": [], "down": []}
    for name in names:
        survived = lost = 0
        seconds, slowest = [], []
        what = name
        for i in range(repeat):
            started = time.time()
            try:
                result = SCENARIOS[name](stack)
            except Exception as exc:  # noqa: BLE001 - a crashed run counts as not survived
                result = scenarios.Result(name, survived=False, lost=-1, detail={"error": repr(exc)[:300]})
            seconds.append(time.time() - started)
            what = result.name if result.lost >= 0 else what
            survived += bool(result.survived)
            lost += max(result.lost, 0)
            if "slowest_s" in result.detail:
                slowest.append(result.detail["slowest_s"])
            uploads["up"] += result.detail.get("upload_s_up", [])
            uploads["down"] += result.detail.get("upload_s_down", [])
            if verbose or not result.survived:
                shown = {k: v for k, v in result.detail.items() if not k.startswith("upload_s_")}
                print(f"  {name} #{i + 1}: survived={result.survived} lost={result.lost} {shown}", flush=True)
        rows.append((name, what, survived, repeat, lost, sum(seconds) / len(seconds), max(slowest) if slowest else None))
        print(f"{name}: {survived}/{repeat} survived, {lost} lost", flush=True)
    return rows, uploads


def print_tables(label: str, rows: list[tuple], uploads: dict, load: str) -> bool:
    print()
    print(f"== {label} ({load})")
    print(f"{'scenario':<12} {'what':<40} {'survived':>9} {'lost':>5} {'mean s':>7} {'slowest request s':>18}")
    for name, what, ok, total, lost, mean_s, slowest in rows:
        shown = f"{slowest:.2f}" if slowest is not None else "-"
        print(f"{name:<12} {what:<40} {f'{ok}/{total}':>9} {lost:>5} {mean_s:>7.1f} {shown:>18}")
    total_ok, total = sum(r[2] for r in rows), sum(r[3] for r in rows)
    total_lost = sum(r[4] for r in rows)
    slowest_all = max((r[6] for r in rows if r[6] is not None), default=None)
    print(f"{'all':<12} {'':<40} {f'{total_ok}/{total}':>9} {total_lost:>5} {'':>7} "
          f"{(f'{slowest_all:.2f}' if slowest_all is not None else '-'):>18}")
    met = total_ok == total and total_lost == 0
    if slowest_all is not None:
        print(f"target: no request over {SLOW_REQUEST_S:.0f} s -> {'met' if slowest_all <= SLOW_REQUEST_S else 'MISSED'}")
        met = met and slowest_all <= SLOW_REQUEST_S
    if uploads["up"] and uploads["down"]:
        print()
        print(f"upload over HTTP, {label}  {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
        for phase in ("up", "down"):
            v = uploads[phase]
            print(f"  Redis {phase:<24} {len(v):>4} {scenarios.percentile(v, 50):>7.3f} "
                  f"{scenarios.percentile(v, 95):>7.3f} {max(v):>7.3f}")
        ratio = scenarios.percentile(uploads["down"], 95) / scenarios.percentile(uploads["up"], 95)
        ok = ratio <= MAX_P95_RATIO
        print(f"  p95 down / p95 up = {ratio:.2f} (target <= {MAX_P95_RATIO:.0f}) -> {'met' if ok else 'MISSED'}")
        met = met and ok
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    parser.add_argument("--passes", default="quiet,hog",
                        help="quiet (nothing else started), hog (one busy-loop process per core), or both")
    parser.add_argument("--hog-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each run's details")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    unknown = (set(names) - set(SCENARIOS)) | (set(passes) - {"quiet", "hog"})
    if unknown:
        parser.error(f"unknown scenario(s) or pass(es): {', '.join(sorted(unknown))}")

    t0 = time.time()
    stack = Stack().start()
    results = []
    try:
        scenarios.prepare(stack, prefix="bench")
        print(f"private stack ready in {time.time() - t0:.0f}s (PostgreSQL :{stack.pg.port}, Redis :{stack.redis.port}, "
              f"gunicorn :{stack.web_port}); {os.cpu_count()} cores", flush=True)
        for name in passes:
            print(f"\n--- pass: {name}", flush=True)
            started = time.time()
            if name == "hog":
                with CpuHog(args.hog_processes) as hog:
                    rows, uploads = run_pass(stack, names, args.repeat, args.verbose)
                    load = (f"{hog.processes} busy-loop processes on {os.cpu_count()} cores, "
                            f"load average {os.getloadavg()[0]:.1f}")
            else:
                rows, uploads = run_pass(stack, names, args.repeat, args.verbose)
                load = f"nothing else started, load average {os.getloadavg()[0]:.1f}"
            results.append((name, rows, uploads, f"{load}; {time.time() - started:.0f} s"))
    finally:
        stack.close()

    met = True
    for name, rows, uploads, load in results:
        met = print_tables({"quiet": "quiet machine (baseline)", "hog": "CPU hog"}[name], rows, uploads, load) and met
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
