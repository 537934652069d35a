"""Backups and restores of a deployment: the database, the media (stored images), the model
checkpoints, and the feature cache's manifest (the cache itself is recomputed from the images)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import timezone as dt_timezone
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from annotations.audit import audit_record
from annotations.models import AuditAction

from .database import database_dump, database_is_empty, database_load, engine
from .manifest import (FORMAT, BackupInvalid, copy_tree_hashed, files_under, manifest_verify, manifest_write,
                       sha256_file)
from .models import BackupRun

log = logging.getLogger(__name__)

# The folders of a deployment a backup holds, by their name in the backup.
TREES = {"media": "MEDIA_ROOT", "models": "MODEL_DIR"}
FEATURE_CACHE_MANIFEST = "feature-cache.json"
NIGHTLY_PREFIX = "leukoportal-"


class BackupRefused(Exception):
    """A backup or restore that cannot start (target not empty, backup not configured)."""


def _is_empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _migration_heads() -> dict[str, str]:
    heads: dict[str, str] = {}
    for app, name in MigrationRecorder.Migration.objects.values_list("app", "name").order_by("app", "name"):
        heads[app] = name
    return heads


def _feature_cache_manifest(folder: Path) -> dict:
    root = Path(settings.FEATURE_CACHE_DIR)
    entries = {rel.as_posix(): (root / rel).stat().st_size for rel in files_under(root)}
    (folder / FEATURE_CACHE_MANIFEST).write_text(json.dumps({"files": entries}, indent=1, sort_keys=True))
    return {"files": len(entries), "bytes": sum(entries.values())}


def _write_backup(work: Path) -> dict:
    """Everything into ``work``: the database first (one consistent snapshot), then the files. Images
    and checkpoints are written before the rows that name them commit and are never rewritten, so
    every file the dump names is there when the trees are copied after it."""
    db_file = database_dump(work)
    files = {db_file: {"size": (work / db_file).stat().st_size, "sha256": sha256_file(work / db_file)}}
    for name, setting in TREES.items():
        for rel, entry in copy_tree_hashed(Path(getattr(settings, setting)), work / name).items():
            files[f"{name}/{rel}"] = entry
    cache = _feature_cache_manifest(work)
    files[FEATURE_CACHE_MANIFEST] = {"size": (work / FEATURE_CACHE_MANIFEST).stat().st_size,
                                     "sha256": sha256_file(work / FEATURE_CACHE_MANIFEST)}
    manifest = {
        "format": FORMAT,
        "created_at": timezone.now().astimezone(dt_timezone.utc).isoformat(),
        "database": {"engine": engine(), "file": db_file},
        "migrations": _migration_heads(),
        "feature_cache": cache,
        "files": files,
    }
    manifest_write(work, manifest)
    return manifest


def backup_create(*, out: Path, trigger: str = "command", actor=None) -> BackupRun:
    """Write a backup folder at ``out`` (absent or empty): built beside it as ``OUT.partial`` and
    renamed when complete, so a folder with the final name is always a whole backup. The attempt
    is recorded (BackupRun) and audited, failed or not; a failure is raised again."""
    out = Path(out).absolute()
    if not _is_empty_dir(out):
        raise BackupRefused(f"{out} exists and is not empty: name a new folder")
    run = BackupRun.objects.create(path=str(out), trigger=trigger)
    work = out.with_name(out.name + ".partial")
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        manifest = _write_backup(work)
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    except Exception as exc:
        shutil.rmtree(work, ignore_errors=True)
        BackupRun.objects.filter(pk=run.pk).update(status=BackupRun.Status.FAILED, error=str(exc)[:4000],
                                                   finished_at=timezone.now())
        audit_record(actor=actor, action=AuditAction.BACKUP_FAILED, target=run,
                     after={"path": str(out), "trigger": trigger, "error": str(exc)[:500]})
        raise
    size = sum(e["size"] for e in manifest["files"].values())
    BackupRun.objects.filter(pk=run.pk).update(status=BackupRun.Status.OK, size_bytes=size,
                                               files=len(manifest["files"]), finished_at=timezone.now())
    audit_record(actor=actor, action=AuditAction.BACKUP_CREATE, target=run,
                 after={"path": str(out), "trigger": trigger, "files": len(manifest["files"]), "bytes": size})
    run.refresh_from_db()
    return run


def backup_restore(*, src: Path) -> dict:
    """Restore the backup folder ``src`` into this (empty) deployment: every checksum is verified
    before anything is written, the files are verified again once copied, then the database is
    loaded and migrated to this release. A failure leaves the deployment as empty as it was."""
    src = Path(src).absolute()
    manifest = manifest_verify(src)
    targets = {name: Path(getattr(settings, setting)) for name, setting in TREES.items()}
    not_empty = [f"{setting} ({targets[name]})" for name, setting in TREES.items() if not _is_empty_dir(targets[name])]
    if not database_is_empty():
        not_empty.insert(0, "the database (it has tables)")
    if not_empty:
        raise BackupRefused("restore goes into an empty deployment; not empty: " + ", ".join(not_empty))
    try:
        copied = 0
        problems = []
        for rel, entry in manifest["files"].items():
            name, _, sub = rel.partition("/")
            if name not in targets or not sub:
                continue
            dest = targets[name] / sub
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest)
            if sha256_file(dest) != entry["sha256"]:
                problems.append(f"{rel}: the restored copy's sha256 differs")
            copied += 1
        if problems:
            raise BackupInvalid(problems)
        database_load(src / manifest["database"]["file"])
    except Exception:
        for root in targets.values():
            if root.is_dir():
                for child in root.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    call_command("migrate", interactive=False, verbosity=0)
    summary = {"path": str(src), "created_at": manifest["created_at"], "files": copied,
               "database": manifest["database"]["engine"]}
    audit_record(actor=None, action=AuditAction.BACKUP_RESTORE, target=("Backup", manifest["created_at"][:64]),
                 after=summary)
    return summary


def backup_prune(*, folder: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest complete nightly backups in ``folder`` (and leftovers of
    interrupted ones); the removed folders."""
    complete = sorted(p for p in Path(folder).glob(NIGHTLY_PREFIX + "*")
                      if p.is_dir() and not p.name.endswith(".partial") and (p / "MANIFEST.json").is_file())
    removed = complete[:-keep] if keep > 0 else []
    removed += [p for p in Path(folder).glob(NIGHTLY_PREFIX + "*.partial") if p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def backup_nightly() -> BackupRun:
    """The scheduled backup: a new folder under BACKUP_DIR, then the retention (BACKUP_KEEP)."""
    folder = settings.BACKUP_DIR
    if not folder:
        raise BackupRefused("BACKUP_DIR is not set: the nightly backup has nowhere to write")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = timezone.now().astimezone(dt_timezone.utc).strftime("%Y%m%d-%H%M%S")
    run = backup_create(out=folder / f"{NIGHTLY_PREFIX}{stamp}", trigger="nightly")
    removed = backup_prune(folder=folder, keep=settings.BACKUP_KEEP)
    if removed:
        log.info("backup retention removed %s", ", ".join(p.name for p in removed))
    return run
