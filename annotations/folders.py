"""ImageFolder trees: one folder per class code (used by import_cells and the classifier commands)."""
from pathlib import Path

from django.core.exceptions import ValidationError

from .models import CellClass


def class_folders(root, *, check_taxonomy: bool = True, allow_inactive: bool = False) -> list[Path]:
    """The class folders of ``root``, sorted; a folder that names no class is an error listing the known codes."""
    root = Path(root)
    if not root.is_dir():
        raise ValidationError(f"{root} is not a directory.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValidationError(f"{root} has no class folders (expected one folder per class code).")
    if check_taxonomy:
        classes = {c.code: c for c in CellClass.objects.filter(is_abstain=False)}
        usable = {code for code, c in classes.items() if c.active or allow_inactive}
        unknown = [p.name for p in folders if p.name not in classes]
        if unknown:
            raise ValidationError(
                f"Unknown class folder(s): {', '.join(unknown)}. Known codes: {', '.join(sorted(usable))}."
            )
        inactive = [p.name for p in folders if p.name not in usable]
        if inactive:
            raise ValidationError(f"Class folder(s) {', '.join(inactive)} name inactive classes.")
    return folders
