"""ImageFolder trees (folder name = class code) for the command-line training and evaluation."""
from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from annotations.archives import IMAGE_EXTENSIONS
from annotations.folders import class_folders


def folder_items(root: str | Path, *, check_taxonomy: bool = True) -> list[tuple[Path, str]]:
    """(path, class code) for every image under ``root``/<code>/; unknown codes are an error."""
    try:
        folders = class_folders(root, check_taxonomy=check_taxonomy, allow_inactive=True)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    items = [
        (path, folder.name)
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    ]
    if not items:
        raise CommandError(f"No images (JPEG, PNG, TIFF, BMP) under {root}.")
    return items
