"""The backup folder's checksum manifest: plain Python (no Django), so a restore can verify a backup
before anything is written, and so can an operator with ``sha256sum``-like tools.

A backup folder holds ``MANIFEST.json``: the format, when and from what it was made, and one entry per
file (path relative to the folder, size, sha256). Verification refuses a missing file, a file whose
size or sha256 differs, and a file the manifest does not list.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

MANIFEST = "MANIFEST.json"
FORMAT = 1
_CHUNK = 1024 * 1024


class BackupInvalid(Exception):
    """A backup folder that does not match its manifest (each problem listed)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the backup does not match its manifest: " + "; ".join(problems[:20])
                         + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_under(root: Path) -> list[Path]:
    """Every regular file under ``root`` (relative paths, sorted); none when it does not exist."""
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def copy_tree_hashed(src: Path, dst: Path) -> dict[str, dict]:
    """Copy every file of ``src`` to ``dst`` (same relative paths); their sizes and sha256, by relative path.
    The hash is of the copy, so the manifest describes what the backup holds."""
    out = {}
    for rel in files_under(src):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        out[rel.as_posix()] = {"size": target.stat().st_size, "sha256": sha256_file(target)}
    return out


def manifest_write(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, folder / MANIFEST)


def manifest_read(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise BackupInvalid([f"{MANIFEST} is missing in {folder}"])
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BackupInvalid([f"{MANIFEST} is not valid JSON ({exc})"]) from exc
    if manifest.get("format") != FORMAT:
        raise BackupInvalid([f"unknown backup format {manifest.get('format')!r} (this release reads {FORMAT})"])
    return manifest


def manifest_verify(folder: Path) -> dict:
    """The manifest of ``folder`` once every file has been checked against it (BackupInvalid otherwise)."""
    manifest = manifest_read(folder)
    listed = manifest.get("files", {})
    problems = []
    for rel, entry in sorted(listed.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, the manifest says {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    for rel in files_under(folder):
        if rel.as_posix() != MANIFEST and rel.as_posix() not in listed:
            problems.append(f"{rel.as_posix()}: not in the manifest")
    if problems:
        raise BackupInvalid(problems)
    return manifest
