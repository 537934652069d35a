"""Checkpoints: plain dicts of tensors and builtins, written atomically, loaded with
``weights_only=True``, identified by the sha256 of the file."""

from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_write, sha256_file  # noqa: F401 (sha256_file re-exported)

FORMAT = "leukoportal-ensemble"
FORMAT_VERSION = 1


def versions() -> dict:
    import numpy
    import torchvision

    out = {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "numpy": str(numpy.__version__),
           "format": FORMAT_VERSION}
    try:
        import timm

        out["timm"] = str(timm.__version__)
    except ImportError:  # pragma: no cover
        pass
    return out


def save_checkpoint(ckpt: dict, out_dir: Path | str, stem: str = "ensemble") -> tuple[Path, str]:
    """Write ``ckpt`` to a temporary file in ``out_dir``, then ``os.replace`` it to
    ``<stem>-<sha256[:16]>.pt``. Returns (path, sha256)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = dict(ckpt, format=FORMAT, format_version=FORMAT_VERSION)
    digest = ""

    def named_by_content(tmp: Path) -> Path:
        nonlocal digest
        digest = sha256_file(tmp)
        return out_dir / f"{stem}-{digest[:16]}.pt"

    final = atomic_write(named_by_content, lambda tmp: torch.save(ckpt, tmp), directory=out_dir)
    return final, digest


def load_checkpoint(path: Path | str) -> tuple[dict, str]:
    """Load with ``map_location="cpu", weights_only=True``; returns (dict, sha256 of the file)."""
    path = Path(path)
    digest = sha256_file(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a LeukoPortal ensemble checkpoint")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer version (format {ckpt.get('format_version')})")
    return ckpt, digest
