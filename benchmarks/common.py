"""What several benchmark scripts share: the pbc-dev split and the data arguments of the domain
benchmarks, the printed tables' header and parts, and the environment and ``manage.py`` runner of
the portal benchmarks. Plain Python: importable without Django or torch."""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")
# The shared data set, found as the tests find it: LEUKO_SHARED_DATA, else ../shared/data beside the checkout.
SHARED = Path(os.environ.get("LEUKO_SHARED_DATA", REPO.parent / "shared" / "data"))

PARTS = ("tune", "test", "all")  # the parts a detection benchmark reports with --split each


def is_pbc_test(name: str) -> bool:
    """The pbc-dev test split of docs/ml.md: sha256("split0:" + file name) % 5 == 0."""
    return int(hashlib.sha256(f"split0:{name}".encode()).hexdigest(), 16) % 5 == 0


def pbc_split(pbc: Path) -> tuple[list[str], list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The classes of a pbc-dev folder (one sub-folder each) and its (path, class) pairs split
    into train and test (:func:`is_pbc_test`)."""
    classes = sorted(d.name for d in pbc.iterdir() if d.is_dir())
    train, test = [], []
    for c in classes:
        for p in sorted((pbc / c).glob("*.jpg")):
            (test if is_pbc_test(p.name) else train).append((p, c))
    return classes, train, test


def add_domain_arguments(ap: argparse.ArgumentParser, *, work: str) -> None:
    """The data, cache, work folder and thread arguments of the benchmarks that train on pbc-dev
    and measure on bccd-dev (``work``: the folder under var/bench)."""
    ap.add_argument("--pbc", default=str(SHARED / "pbc-dev"))
    ap.add_argument("--bccd", default=str(SHARED / "bccd-dev"))
    ap.add_argument("--cache-dir", default=str(REPO / "var" / "feature-cache"))
    ap.add_argument("--work", default=str(REPO / "var" / "bench" / work))
    ap.add_argument("--threads", type=int, default=None)


def print_table_header(header: str) -> None:
    """A blank line, the header, and a rule as long as the header."""
    print()
    print(header)
    print("-" * len(header))


def parts_of(split: str) -> list[str]:
    """The parts a table reports: all of :data:`PARTS` for ``each``, else the one asked for."""
    return list(PARTS) if split == "each" else [split]


def in_part(records: list[dict], part: str) -> list[dict]:
    """The records of one part (``all``: every record)."""
    return records if part == "all" else [r for r in records if r["split"] == part]


def bench_env(db_url: str, var: Path, **extra: str) -> dict:
    """The environment of the portal's processes under a benchmark: production-like settings on
    ``db_url``, files under ``var``, no cache server; ``extra`` adds or replaces variables."""
    env = os.environ.copy()
    env.update({
        "DATABASE_URL": db_url, "DEBUG": "false", "SECRET_KEY": "benchmark-secret-key-not-for-production",
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false", "LEUKOPORTAL_VAR_DIR": str(var), "MEDIA_ROOT": str(var / "media"),
        "AUTO_CLASSIFY_UPLOADS": "false", "LOG_LEVEL": "WARNING",
    })
    env.update(extra)
    env.pop("CACHE_URL", None)
    return env


def manage(env: dict, *args: str, capture: bool = False) -> str | None:
    """Run ``manage.py`` with ``args`` in ``env``; its standard output when ``capture``."""
    result = subprocess.run([PY, "manage.py", *args], cwd=REPO, env=env, check=True, text=True,
                            capture_output=capture)
    return result.stdout if capture else None
