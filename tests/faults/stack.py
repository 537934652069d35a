"""A private stack for fault injection: its own PostgreSQL cluster, Redis, Celery worker and
gunicorn, on free loopback ports, so they can be killed and restarted freely without touching
the machine's shared services. Used by tests/faults and benchmarks/faults.py."""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import REPO, wait_for

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll an observable outcome until it holds; a TimeoutError after ``timeout`` (a generous
    deadline, not a figure), which the scenarios catch."""
    return wait_for(predicate, timeout=timeout, interval=interval, message=what, error=TimeoutError)


def _wait_started(proc: subprocess.Popen, log: Path, ready, *, name: str, what: str) -> None:
    """Wait until ``ready()`` holds; if ``proc`` exits first, fail with the tail of its log."""

    def started():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n" + log.read_text()[-3000:])
        return ready()

    wait_until(started, 600, what)


def _kill_group(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class PrivateRedis:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=(self.workdir / "redis.log").open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_until(lambda: _port_open(self.port), 120, "redis")

    def kill(self) -> None:
        """kill -9: whatever the broker held in memory is gone."""
        if self.proc:
            _kill_group(self.proc)
        wait_until(lambda: not _port_open(self.port), 120, "redis to stop")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PrivatePostgres:
    """initdb + pg_ctl in a temp dir, as the postgres OS user when run as root."""

    def __init__(self, workdir: Path):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins and not shutil.which("pg_ctl"):
            raise RuntimeError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin).")
        self.bin = Path(bins[-1]) if bins else Path(shutil.which("pg_ctl")).parent
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0

    def _run(self, *args, check=True, timeout=300):
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync",
                  "--no-instructions")

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.workdir / "pg.log"), "-w", "-t", "240",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "240", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def sql(self, query: str, params=None, dbname: str = "leukoportal"):
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=30) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None


class Stack:
    """PostgreSQL + Redis + (optionally) a Celery worker and gunicorn, all private."""

    def __init__(self, workdir: Path | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="leukoportal-faults-"))
        os.chmod(self.workdir, 0o711)  # the postgres OS user must reach its data directory
        (self.workdir / "pg").mkdir(parents=True, exist_ok=True)
        (self.workdir / "redis").mkdir(exist_ok=True)
        self.var = self.workdir / "var"
        self.var.mkdir(exist_ok=True)
        self.pg = PrivatePostgres(self.workdir / "pg")
        self.redis = PrivateRedis(self.workdir / "redis")
        self.worker: subprocess.Popen | None = None
        self.web: subprocess.Popen | None = None
        self.web_port: int | None = None

    # --- environment ------------------------------------------------------------------------
    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": "leukoportal.settings",
            "DATABASE_URL": self.pg.url("leukoportal"),
            "CELERY_BROKER_URL": self.redis.url(0),
            "SECRET_KEY": "fault-injection-secret-key-" + "x" * 40,
            "DEBUG": "false", "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false", "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LEUKOPORTAL_VAR_DIR": str(self.var), "MEDIA_ROOT": str(self.var / "media"),
            "MODEL_DIR": str(self.var / "models"), "FEATURE_CACHE_DIR": str(self.var / "feature-cache"),
            "CLASSIFIER_DEVICE": "cpu", "CLASSIFIER_TRAIN_WEIGHTS": "none",
            "CLASSIFIER_TRAIN_OVERRIDES": json.dumps(TINY_RECIPE), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
        })
        env.pop("CACHE_URL", None)  # the file cache under var/: the broker outage is about the broker
        env.pop("CELERY_RESULT_BACKEND", None)
        env.update(extra)
        return env

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Stack":
        self.pg.init()
        self.pg.start()
        self.pg.sql("CREATE DATABASE leukoportal", dbname="postgres")
        self.redis.start()
        self.manage("migrate", "--noinput", timeout=900)
        return self

    def manage(self, *args, timeout=120) -> str:
        r = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=self.env(), capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def agent(self, command: str, **kwargs):
        """Run one named helper (tests/faults/agent.py) inside Django on this stack; its JSON answer."""
        r = subprocess.run([PYTHON, "-m", "tests.faults.agent", command, json.dumps(kwargs)], cwd=REPO, env=self.env(),
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"agent {command} failed:\n{r.stdout}\n{r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def agent_background(self, command: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([PYTHON, "-m", "tests.faults.agent", command, json.dumps(kwargs)], cwd=REPO,
                                env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_worker(self, queues: str = "default,inference,training") -> subprocess.Popen:
        log = self.workdir / "worker.log"
        self.worker = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "leukoportal", "worker", "-Q", queues, "-c", "1", "--without-mingle",
             "--without-gossip", "--without-heartbeat", "-l", "INFO", "-n", f"faults-{os.getpid()}-{time.time():.0f}@%h"],
            cwd=REPO, env=self.env(), stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        start = log.stat().st_size if log.exists() else 0

        def ready():
            with log.open() as fh:
                fh.seek(start)
                return " ready." in fh.read()

        _wait_started(self.worker, log, ready, name="worker", what="the Celery worker")
        return self.worker

    def kill_worker(self) -> None:
        """kill -9 the worker and its pool children (the whole process group)."""
        if self.worker is not None:
            _kill_group(self.worker, signal.SIGKILL)
            self.worker = None

    def start_web(self, workers: int = 3, threads: int = 4) -> int:
        self.web_port = self.web_port or free_port()
        log = self.workdir / "gunicorn.log"
        self.web = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "leukoportal.wsgi:application", "--preload", "--bind", f"127.0.0.1:{self.web_port}",
             "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread", "--timeout", "300",
             "--graceful-timeout", "5", "--log-level", "warning"],
            cwd=REPO, env=self.env(), stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        _wait_started(self.web, log, lambda: _port_open(self.web_port), name="gunicorn", what="gunicorn")
        return self.web_port

    def stop_web(self) -> None:
        if self.web is not None:
            _kill_group(self.web, signal.SIGTERM)
            self.web = None

    def close(self) -> None:
        self.kill_worker()
        self.stop_web()
        self.redis.kill() if self.redis.running() else None
        self.pg.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


# A recipe small enough for seconds on a CPU: one pooled view at 32 px, fp32 features.
TINY_RECIPE = {"input_size": 32, "views": ["id"], "tta_views": ["id"], "feature_precision": "fp32", "features": "pooled",
}
TINY_BACKBONE = "efficientnet_lite0"
