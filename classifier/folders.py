"""ImageFolder trees (folder name = class code) for the command-line training and evaluation."""
from __future__ import annotations

import hashlib
from pathlib import Path

from django.core.management.base import CommandError

from annotations.archives import IMAGE_EXTENSIONS
from annotations.models import CellClass


def folder_items(root: str | Path, *, check_taxonomy: bool = True) -> list[tuple[Path, str]]:
    """(path, class code) for every image under ``root``/<code>/; unknown codes are an error."""
    root = Path(root)
    if not root.is_dir():
        raise CommandError(f"{root} is not a directory.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise CommandError(f"{root} has no class folders (expected one folder per class code).")
    if check_taxonomy:
        known = set(CellClass.objects.filter(is_abstain=False).values_list("code", flat=True))
        unknown = [p.name for p in folders if p.name not in known]
        if unknown:
            raise CommandError(f"Unknown class folder(s): {', '.join(unknown)}. Known codes: {', '.join(sorted(known))}.")
    items = [
        (path, folder.name)
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    ]
    if not items:
        raise CommandError(f"No images (JPEG, PNG, TIFF, BMP) under {root}.")
    return items


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
