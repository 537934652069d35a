"""The database part of a backup: PostgreSQL through ``pg_dump`` (custom format, one consistent
snapshot) and ``pg_restore``; the embedded SQLite file through SQLite's online backup API (a
consistent copy while web, worker and beat keep writing)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from django.db import connection

PG_FILE = "database.pgdump"
SQLITE_FILE = "database.sqlite3"


class DatabaseToolError(Exception):
    """pg_dump / pg_restore failed or is missing (its message and exit status)."""


def engine() -> str:
    """'postgresql' or 'sqlite' (the two engines a deployment uses)."""
    vendor = connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise DatabaseToolError(f"backups support PostgreSQL and SQLite, not {vendor}")
    return vendor


def _pg_args_env() -> tuple[list[str], dict]:
    db = connection.settings_dict
    args = ["--dbname", db["NAME"]]
    if db.get("HOST"):
        args += ["--host", db["HOST"]]
    if db.get("PORT"):
        args += ["--port", str(db["PORT"])]
    if db.get("USER"):
        args += ["--username", db["USER"]]
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]  # the environment, never the command line (visible in ps)
    return args, env


def _run(cmd: list[str], env: dict) -> None:
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise DatabaseToolError(f"{cmd[0]} is not installed (Debian: postgresql-client, the server's major "
                                "version or newer)") from exc
    if proc.returncode != 0:
        raise DatabaseToolError(f"{cmd[0]} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def database_dump(folder: Path) -> str:
    """Write the database into ``folder``; the file's name."""
    if engine() == "postgresql":
        args, env = _pg_args_env()
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(folder / PG_FILE), *args],
             env)
        return PG_FILE
    connection.ensure_connection()
    target = sqlite3.connect(folder / SQLITE_FILE)
    try:
        with target:
            connection.connection.backup(target)  # the online backup API: a consistent copy
    finally:
        target.close()
    return SQLITE_FILE


def database_is_empty() -> bool:
    """No table at all: a deployment nothing has migrated yet."""
    with connection.cursor() as cursor:
        return not connection.introspection.table_names(cursor)


def database_load(path: Path) -> None:
    """Load a dump into this deployment's (empty) database: all of it or nothing."""
    if path.name == PG_FILE:
        if engine() != "postgresql":
            raise DatabaseToolError("this backup holds a PostgreSQL dump; DATABASE_URL must name a PostgreSQL database")
        args, env = _pg_args_env()
        connection.close()
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", *args,
              str(path)], env)
        return
    if engine() != "sqlite":
        raise DatabaseToolError("this backup holds an SQLite database; restore it into the embedded default "
                                "(DATABASE_URL unset) or load it with another tool")
    connection.ensure_connection()
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        source.backup(connection.connection)
    finally:
        source.close()
