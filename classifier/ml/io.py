"""Pure helpers the library and the apps share (no Django, no torch): a file written atomically, the
sha256 of a file or of a JSON value, and values made safe for JSON columns."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(final: Path | str | Callable[[Path], Path], write: Callable[[Path], None], *,
                 directory: Path | str | None = None, suffix: str = ".tmp") -> Path:
    """Write a file through ``write(temporary path)`` in ``directory`` (by default the final path's folder),
    then ``os.replace`` it to ``final``: a reader sees the old file or the whole new one, never a part.
    ``final`` may be a function of the written temporary file (a name that depends on the content).
    The temporary file is removed when anything fails. Returns the final path."""
    if directory is None:
        if callable(final):
            raise TypeError("atomic_write needs a directory when the final path is computed.")
        directory = Path(final).parent
    directory = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(Path(tmp))
        target = Path(final(Path(tmp)) if callable(final) else final)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def sha256_file(path: Path | str) -> str:
    """The file's sha256 (hex), read in chunks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_sha256(value) -> str:
    """sha256 of ``value`` as JSON with sorted keys (the hash of a frozen snapshot of rows)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def json_clean(value):
    """Builtins only, for checkpoints and JSON columns (PostgreSQL refuses NaN and infinities): numpy
    scalars become Python numbers, NaN and infinities None, tuples lists, keys strings."""
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return json_clean(value.item())  # a 0-d array or tensor
    return value
