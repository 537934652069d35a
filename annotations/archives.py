"""Safe reading of zip archives of images, and streaming of the archives the portal writes (no Django here).

:func:`open_zip` checks the whole archive before any member is read: too many entries,
absolute paths, ``..``, symbolic links, encrypted members and zip bombs refuse the archive as a
whole (:class:`ArchiveRejected`). :func:`zip_members` then never refuses the archive: a member
that cannot be read is refused alone. So a caller stores nothing until the archive passed, and
never has to take back what it stored.
"""
from __future__ import annotations

import posixpath
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


class ArchiveRejected(ValueError):
    def __init__(self, message: str, code: str = "archive"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes | None  # None when the member was refused before reading
    refused: str | None = None


def _is_junk(name: str) -> bool:
    base = posixpath.basename(name)
    return name.startswith("__MACOSX/") or base.startswith("._") or base in {".DS_Store", "Thumbs.db"}


def open_zip(
    fileobj: BinaryIO,
    *,
    max_entries: int,
    max_uncompressed: int,
    max_ratio: int,
    max_member_bytes: int,
) -> zipfile.ZipFile:
    """The archive, opened, once every check passed; raises ArchiveRejected. The caller closes it."""
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveRejected(f"The file is not a readable zip archive ({exc}).", "bad_zip") from None
    try:
        _check(zf, max_entries=max_entries, max_uncompressed=max_uncompressed, max_ratio=max_ratio,
               max_member_bytes=max_member_bytes)
    except BaseException:
        zf.close()
        raise
    return zf


def _check(zf: zipfile.ZipFile, *, max_entries: int, max_uncompressed: int, max_ratio: int,
           max_member_bytes: int) -> None:
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise ArchiveRejected(
            f"The archive has {len(infos):,} entries; at most {max_entries:,} are accepted.", "too_many_entries"
        )
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveRejected(f"The archive entry {name!r} has an absolute path.", "unsafe_path")
        parts = name.replace("\\", "/").split("/")
        if ".." in parts:
            raise ArchiveRejected(f"The archive entry {name!r} points outside the archive ('..').", "unsafe_path")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveRejected(f"The archive entry {name!r} is a symbolic link.", "symlink")
        if info.flag_bits & 0x1:
            raise ArchiveRejected(f"The archive entry {name!r} is encrypted.", "encrypted")
        total += info.file_size
        if info.file_size > max_member_bytes:
            raise ArchiveRejected(
                f"The archive entry {name!r} unpacks to {info.file_size / 1e6:.0f} MB; the limit is "
                f"{max_member_bytes / 1e6:.0f} MB.",
                "zip_bomb",
            )
        if info.compress_size and info.file_size / info.compress_size > max_ratio and info.file_size > 1_000_000:
            raise ArchiveRejected(
                f"The archive entry {name!r} is compressed {info.file_size // max(info.compress_size, 1)}:1 "
                "— refused as a likely zip bomb.",
                "zip_bomb",
            )
    if total > max_uncompressed:
        raise ArchiveRejected(
            f"The archive unpacks to {total / 1e6:.0f} MB; the limit is {max_uncompressed / 1e6:.0f} MB.",
            "zip_bomb",
        )


def zip_members(zf: zipfile.ZipFile, *, max_member_bytes: int) -> Iterator[Member]:
    """The members of an archive :func:`open_zip` accepted, in order; one that cannot be read
    is refused alone (a member is never read past ``max_member_bytes``)."""
    for info in zf.infolist():
        if info.is_dir() or _is_junk(info.filename):
            continue
        ext = posixpath.splitext(info.filename.lower())[1]
        if ext not in IMAGE_EXTENSIONS:
            yield Member(info.filename, None, "not an image file (accepted: JPEG, PNG, TIFF, BMP)")
            continue
        try:
            with zf.open(info) as fh:
                data = fh.read(max_member_bytes + 1)  # the header's sizes can lie
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            yield Member(info.filename, None, f"could not be unpacked ({exc})")
            continue
        if len(data) > max_member_bytes:
            yield Member(info.filename, None, "unpacks past its stated size")
            continue
        yield Member(info.filename, data)


# --- Writing: a zip streamed while it is made ------------------------------------------------
STREAM_CHUNK = 256 * 1024


def zip_stream_chunks(
    zs,
    *,
    batches: Iterable | None = None,
    on_entry: Callable[[int], None] | None = None,
    chunk_size: int | None = None,
) -> Iterator[bytes]:
    """The bytes of a ``zipstream.ZipStream`` in chunks of about ``chunk_size``, made as they are read.

    Only the entry being written is in memory (files are read in pieces), plus the zip's central
    directory (a few hundred bytes per entry, which the format needs at its end). ``batches``: an
    iterable whose every step adds the next entries to ``zs`` (so that those need not all be known,
    or held, before the first byte is sent); without it every entry was added beforehand.
    ``on_entry(n)`` is called after the n-th entry was written. ``chunk_size``: ``STREAM_CHUNK`` by default.
    """
    chunk_size = chunk_size or STREAM_CHUNK

    def raw() -> Iterator[bytes]:
        done = 0
        for _ in batches if batches is not None else (None,):
            while (yield from zs.file()):
                done += 1
                if on_entry is not None:
                    on_entry(done)
        yield from zs.footer()

    buffer = bytearray()
    for chunk in raw():
        buffer += chunk
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)
