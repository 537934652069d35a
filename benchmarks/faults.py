#!/usr/bin/env python
"""Fault-injection benchmark: every scenario of tests/faults repeated, survived/total and items lost.

Usage (from the repo root)::

    .venv/bin/python benchmarks/faults.py              # each scenario 5 times
    .venv/bin/python benchmarks/faults.py --repeat 3 --only redis,postgres

Everything runs on a private stack started for the run (its own PostgreSQL cluster, Redis,
Celery worker and gunicorn on free loopback ports; tests/faults/stack.py), so the machine's
shared services are never stopped. Scenarios:

* inference  kill -9 the ML worker in the middle of a batch of classification; restart it; the
             beat sweep resends; every cell gets exactly one prediction from the active version.
* training   kill -9 the ML worker during a training run; the run is marked failed by the stale
             check, the active model is unchanged; a retried run trains to the end.
* redis      Redis killed while experts upload and label over HTTP: every request still saves;
             cells are classified after Redis returns.
* postgres   PostgreSQL restarted while experts label over HTTP: errors during the gap are clean
             (a 5xx or a refused connection, never a hang); clients retry; no label lost.
* adjudicate two reviewers post the final decision on the same cell at the same instant over
             HTTP: exactly one wins, the other gets 409 with the reason.

"lost" counts items a user was told were saved (or that must be processed) and are not.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults import scenarios  # noqa: E402
from tests.faults.stack import Stack  # noqa: E402

SCENARIOS = {
    "inference": lambda stack: scenarios.inference_worker_killed(stack),
    "training": lambda stack: scenarios.training_worker_killed(stack),
    "redis": lambda stack: scenarios.redis_outage(stack, users=stack.users),
    "postgres": lambda stack: scenarios.postgres_restart(stack, users=stack.users),
    "adjudicate": lambda stack: scenarios.concurrent_adjudication(stack, users=stack.users),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each run's details")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    t0 = time.time()
    stack = Stack().start()
    rows = []
    try:
        stack.agent("model")
        stack.users = stack.agent("users", labellers=4, reviewers=2, prefix="bench")
        stack.start_worker()
        stack.start_web()
        print(f"private stack ready in {time.time() - t0:.0f}s (PostgreSQL :{stack.pg.port}, Redis :{stack.redis.port}, "
              f"gunicorn :{stack.web_port})", flush=True)
        for name in names:
            survived = lost = 0
            seconds = []
            for i in range(args.repeat):
                started = time.time()
                try:
                    result = SCENARIOS[name](stack)
                except Exception as exc:  # noqa: BLE001 - a crashed run counts as not survived
                    result = scenarios.Result(name, survived=False, lost=-1, detail={"error": repr(exc)[:300]})
                seconds.append(time.time() - started)
                survived += bool(result.survived)
                lost += max(result.lost, 0)
                if args.verbose or not result.survived:
                    print(f"  {name} #{i + 1}: survived={result.survived} lost={result.lost} {result.detail}", flush=True)
            rows.append((name, result.name, survived, args.repeat, lost, sum(seconds) / len(seconds)))
            print(f"{name}: {survived}/{args.repeat} survived, {lost} lost", flush=True)
    finally:
        stack.close()

    print()
    print(f"{'scenario':<12} {'what':<40} {'survived':>9} {'lost':>5} {'mean s':>7}")
    for name, what, ok, total, lost, mean_s in rows:
        print(f"{name:<12} {what:<40} {f'{ok}/{total}':>9} {lost:>5} {mean_s:>7.1f}")
    total_ok = sum(r[2] for r in rows)
    total = sum(r[3] for r in rows)
    total_lost = sum(r[4] for r in rows)
    print(f"{'all':<12} {'':<40} {f'{total_ok}/{total}':>9} {total_lost:>5}")
    return 0 if total_ok == total and total_lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
