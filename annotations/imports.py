"""Import of a cell export (``annotations.exports``): images, readings and adjudications, as they were.

Everything is checked before anything is written: the manifest's columns and every row (classes
this portal knows, splits, times, readers), the archive against the manifest (every file it names
is there, hashes to its sha256 and is an image this lab stores; no image in the tree is left out
of the manifest). A refusal lists every problem with its manifest line, and nothing is imported.
Then the rows are written in one transaction (the image files are content-addressed blobs: one
written for a refused import is removed again).

Readers are matched to this portal's users by name (an export made with reader names), or by
their pseudonymous id when the export came from this same portal. A reader matched by neither is
refused, unless ``create_readers``: then an account of that name is made for them, inactive (no
login, no role), so that each reading keeps its reader. With ``labelled_by`` every cell's final
class is instead recorded as one reading by that user, as the plain folder import does (the
original readings and adjudications are not kept).

Importing the same export twice changes nothing: a cell already here with the same readings is
left alone. A cell already here with other readings (or another split) keeps what it has here,
and the summary lists it.

A new cell's final class is decided here, by this lab's rule (``LabSettings.final_label_decide``,
as for a reading given on the labelling page), from the readings and the adjudication imported: a
cell the export calls final by agreement on one reading, where this lab requires two, waits for
its second reader here. The summary lists every cell decided otherwise than in the export.

Every attempt is audited, an import that wrote nothing and a refused one included.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import posixpath
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from classifier.enqueue import classification_enqueue_on_commit
from sources.models import Source as SourceModel
from sources.selectors import source_resolve

from .archives import IMAGE_EXTENSIONS, ArchiveRejected, open_zip
from .audit import audit_record
from .deid import deidentified_code_problem
from .exports import (
    CLASSES,
    MANIFEST,
    LATER_COLUMNS,
    MANIFEST_COLUMNS,
    README,
    UNDECIDED,
    DecidedBy,
    reader_pseudonym,
)
from .imaging import ACCEPTED_FORMATS, ImageRejected, sanitize_image
from .models import (Adjudication, AuditAction, AuditEvent, CellClass, CellImage, Label, LabSettings, Source, Split,
                     UploadBatch)
from .services import _storage_name, duplicate_message, import_refusal_record, planner_statistics_refresh

MAX_PROBLEMS_LISTED = 50
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SOURCES = (Source.CELL, Source.SLIDE_CELL)
_FORMATS = set(ACCEPTED_FORMATS) | {"?"}
_IMAGE_ONLY = ["path", "sha256", "split", "source", "width", "height", "original_format", "uploaded_at",
               "sample_code", "final_class", "decided_by", "decided_at", "needs_review",
               "adjudicated_by", "adjudicated_class", "adjudicated_at"]


class ImportRefused(Exception):
    """The export disagrees with itself or with this portal; ``problems`` says where (nothing was imported)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS_LISTED]
        more = len(self.problems) - len(shown)
        super().__init__("The export was refused; nothing was imported. " + " ".join(shown)
                         + (f" … and {more} more problem(s)." if more else ""))


def is_cell_export(path) -> bool:
    """A zip file, or a folder with a manifest.csv: what :func:`cells_import_export` reads."""
    path = Path(path)
    return (path.is_file() and zipfile.is_zipfile(path)) or (path / MANIFEST).is_file()


# --- Reading the archive ------------------------------------------------------------------------
class _Zip:
    def __init__(self, fileobj, *, max_entries: int, max_uncompressed: int, owned=None):
        self.owned = owned
        self.zf = open_zip(fileobj, max_entries=max_entries, max_uncompressed=max_uncompressed,
                           max_ratio=settings.ZIP_MAX_RATIO, max_member_bytes=settings.UPLOAD_MAX_BYTES)
        self.members = {i.filename: i for i in self.zf.infolist() if not i.is_dir()}

    def names(self) -> list[str]:
        return list(self.members)

    def read(self, name: str) -> bytes | None:
        info = self.members.get(name)
        if info is None:
            return None
        with self.zf.open(info) as fh:
            data = fh.read(settings.UPLOAD_MAX_BYTES + 1)
        if len(data) > settings.UPLOAD_MAX_BYTES:
            raise ArchiveRejected(f"The archive entry {name!r} unpacks past its stated size.", "zip_bomb")
        return data

    def close(self) -> None:
        self.zf.close()
        if self.owned is not None:
            self.owned.close()


class _Folder:
    """An unpacked export: only regular files inside the folder are read (no link leads out)."""

    def __init__(self, root):
        self.root = Path(root).resolve()

    def _path(self, name: str) -> Path | None:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            return None
        path = self.root.joinpath(*parts)
        if path.is_symlink() or not path.is_file() or self.root not in path.resolve().parents:
            return None
        return path

    def names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in sorted(self.root.rglob("*"))
                if p.is_file() and not p.is_symlink()]

    def read(self, name: str) -> bytes | None:
        path = self._path(name)
        if path is None:
            return None
        if path.stat().st_size > settings.UPLOAD_MAX_BYTES:
            raise ArchiveRejected(f"The file {name!r} is larger than {settings.UPLOAD_MAX_BYTES / 1e6:.0f} MB.",
                                  "too_large")
        return path.read_bytes()

    def close(self) -> None:
        pass


def _is_junk(name: str) -> bool:
    base = posixpath.basename(name)
    return name.startswith("__MACOSX/") or base.startswith(".") or base in {"Thumbs.db"}


# --- The records the manifest describes ------------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    line: int
    reader: str
    cell_class: str
    unsure: bool
    read_at: dt.datetime
    superseded_at: dt.datetime | None
    suggested_class: str
    suggestion_referred: bool = False  # the suggestion was a referred cell's best guess


@dataclass
class Record:
    """One cell of the manifest (its first line, its image-level values, its readings)."""

    line: int
    values: dict
    uploaded_at: dt.datetime
    decided_at: dt.datetime | None
    needs_review: bool
    adjudicated_at: dt.datetime | None
    readings: list[Reading] = field(default_factory=list)
    stored_sha256: str = ""  # the sha256 of the pixels as this portal stores them
    width: int = 0
    height: int = 0


@dataclass
class CellImportSummary:
    images_created: int = 0
    images_present: int = 0  # already here with the same readings: left alone
    readings_created: int = 0
    adjudications_created: int = 0
    readers_created: list[str] = field(default_factory=list)
    reencoded: int = 0  # files whose pixels this portal stores as another PNG (another sha256)
    kept: list[dict] = field(default_factory=list)  # cells already here with other readings or split
    # new cells whose final class under this lab's rule differs from the export's
    redecided: list[dict] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.images_created or self.readings_created or self.adjudications_created or self.readers_created)

    def as_dict(self) -> dict:
        return {"images_created": self.images_created, "images_present": self.images_present,
                "readings_created": self.readings_created, "adjudications_created": self.adjudications_created,
                "readers_created": self.readers_created, "reencoded": self.reencoded, "kept": self.kept,
                "redecided": self.redecided, "batches": self.batches}


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("no time zone")
    return value


class _Checker:
    """Collects the problems of the manifest, each with its line."""

    def __init__(self, classes: dict[str, CellClass], exported_names: dict[str, str]):
        self.problems: list[str] = []
        self.classes = classes
        self.exported_names = exported_names  # code -> name in classes.csv

    def add(self, line: int | None, message: str) -> None:
        self.problems.append(f"{MANIFEST} line {line}: {message}" if line else message)

    def time(self, line, row, column, *, required: bool) -> dt.datetime | None:
        text = row.get(column) or ""
        if not text:
            if required:
                self.add(line, f"{column} is empty.")
            return None
        try:
            return _parse_time(text)
        except ValueError:
            self.add(line, f"{column} {text!r} is not an ISO 8601 time with its time zone.")
            return None

    def flag(self, line, row, column, *, blank_ok: bool = False) -> bool | None:
        text = (row.get(column) or "").lower()
        if text in ("true", "false"):
            return text == "true"
        if blank_ok and text == "":
            return None
        self.add(line, f"{column} is {row.get(column)!r}; expected true or false.")
        return None

    def cell_class(self, line, code: str, column: str, *, expert: bool) -> bool:
        """Is ``code`` a class of this portal (and, for an expert's reading, not the model's abstention)?"""
        known = self.classes.get(code)
        if known is None:
            hint = f" (classes.csv names it {self.exported_names[code]!r})" if code in self.exported_names else ""
            self.add(line, f"unknown class {code!r} in {column}{hint}; add it to the taxonomy first.")
            return False
        if code not in self.exported_names:
            self.add(line, f"the class {code!r} in {column} is not listed in {CLASSES}.")
            return False
        if expert and known.is_abstain:
            self.add(line, f"{column} is {code!r}, the model's abstention, not an expert's class.")
            return False
        return True


def _read_classes(source) -> tuple[dict[str, str], list[str]]:
    data = source.read(CLASSES)
    if data is None:
        return {}, [f"The export has no {CLASSES}."]
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        return {}, [f"{CLASSES} cannot be read ({exc})."]
    if not rows or "code" not in rows[0] or "name" not in rows[0]:
        return {}, [f"{CLASSES} needs the columns code and name."]
    return {r["code"]: r["name"] for r in rows if r.get("code")}, []


def _parse_manifest(source, checker: _Checker) -> dict[str, Record]:
    data = source.read(MANIFEST)
    if data is None:
        checker.add(None, f"The export has no {MANIFEST}.")
        return {}
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        checker.add(None, f"{MANIFEST} cannot be read ({exc}).")
        return {}
    missing = [c for c in MANIFEST_COLUMNS if c not in header and c not in LATER_COLUMNS]
    if missing:
        checker.add(None, f"{MANIFEST} lacks the column(s): {', '.join(missing)}.")
        return {}
    records: dict[str, Record] = {}
    try:
        for row in reader:
            _parse_row(reader.line_num, row, records, checker)
    except csv.Error as exc:
        checker.add(reader.line_num, f"malformed CSV ({exc}).")
    if not records and not checker.problems:
        checker.add(None, f"{MANIFEST} lists no cell.")
    for record in records.values():
        _check_record(record, checker)
    return records


def _parse_row(line: int, row: dict, records: dict[str, Record], checker: _Checker) -> None:
    if None in row or any(v is None for v in row.values()):
        checker.add(line, f"has {'more' if None in row else 'fewer'} fields than the header.")
        return
    row = {c: "" for c in LATER_COLUMNS} | row  # an export made before those columns: read as empty
    before = len(checker.problems)
    sha = row["sha256"]
    if not _SHA256.match(sha):
        checker.add(line, f"sha256 {sha!r} is not 64 lowercase hex digits.")
        return
    record = records.get(sha)
    if record is not None:  # a further reading of the same cell: the cell's values must repeat
        for column in _IMAGE_ONLY + ["adjudication_note", "acquisition_source"]:
            if row[column] != record.values[column]:
                checker.add(line, f"{column} {row[column]!r} disagrees with line {record.line} "
                                  f"({record.values[column]!r}) for the same cell.")
                return
    else:
        if row["split"] not in Split.values:
            checker.add(line, f"split {row['split']!r} is not train or heldout.")
        if row["source"] not in _SOURCES:
            checker.add(line, f"source {row['source']!r} is not cell or slide_cell.")
        for column in ("width", "height"):
            if not row[column].isdigit() or int(row[column]) < 1:
                checker.add(line, f"{column} {row[column]!r} is not a positive whole number.")
        if row["original_format"] not in _FORMATS:
            checker.add(line, f"original_format {row['original_format']!r} is not one of {', '.join(sorted(_FORMATS))}.")
        if row["sample_code"]:
            problem = deidentified_code_problem(row["sample_code"])
            if problem:
                checker.add(line, f"sample_code refused: {problem}")
        final = row["final_class"]
        if final:
            checker.cell_class(line, final, "final_class", expert=False)
        expected = f"{final or UNDECIDED}/"
        if not row["path"].startswith(expected) or row["path"].count("/") != 1:
            checker.add(line, f"path {row['path']!r} is not in the folder of its final class ({expected}).")
        elif posixpath.splitext(row["path"])[1].lower() not in IMAGE_EXTENSIONS:
            checker.add(line, f"path {row['path']!r} is not an image file.")
        if bool(final) != bool(row["decided_by"]) or (row["decided_by"] and row["decided_by"] not in DecidedBy.ALL):
            checker.add(line, f"decided_by {row['decided_by']!r} does not fit final_class {final!r} "
                              f"(one of {', '.join(DecidedBy.ALL)} with a final class, empty without).")
        uploaded = checker.time(line, row, "uploaded_at", required=True)
        decided = checker.time(line, row, "decided_at", required=bool(final))
        needs_review = checker.flag(line, row, "needs_review")
        adjudicated_at = None
        if row["adjudicated_by"] or row["adjudicated_class"] or row["adjudicated_at"]:
            if not (row["adjudicated_by"] and row["adjudicated_class"]):
                checker.add(line, "an adjudication needs adjudicated_by, adjudicated_class and adjudicated_at.")
            else:
                checker.cell_class(line, row["adjudicated_class"], "adjudicated_class", expert=True)
                _check_username(checker, line, row["adjudicated_by"], "adjudicated_by")
            adjudicated_at = checker.time(line, row, "adjudicated_at", required=True)
        if len(checker.problems) > before:
            return
        record = records[sha] = Record(line=line, values={c: row[c] for c in _IMAGE_ONLY + ["adjudication_note",
                                                                                              "acquisition_source"]},
                                       uploaded_at=uploaded, decided_at=decided, needs_review=needs_review,
                                       adjudicated_at=adjudicated_at)
    reading_values = [row[c] for c in ("reader", "reader_class", "unsure", "read_at", "superseded_at",
                                       "suggested_class", "confirmed_suggestion")]
    if not any(reading_values):
        if record.readings or record.line != line:
            checker.add(line, "a row without a reading, for a cell that has readings.")
        return
    if not (row["reader"] and row["reader_class"]):
        checker.add(line, "a reading needs reader, reader_class and read_at.")
        return
    _check_username(checker, line, row["reader"], "reader")
    ok = checker.cell_class(line, row["reader_class"], "reader_class", expert=True)
    unsure = checker.flag(line, row, "unsure")
    read_at = checker.time(line, row, "read_at", required=True)
    superseded_at = checker.time(line, row, "superseded_at", required=False)
    suggested = row["suggested_class"]
    if suggested:
        ok = checker.cell_class(line, suggested, "suggested_class", expert=False) and ok
    confirmed = checker.flag(line, row, "confirmed_suggestion", blank_ok=True)
    if ok and (confirmed != (suggested == row["reader_class"]) if suggested else row["confirmed_suggestion"]):
        checker.add(line, f"confirmed_suggestion {row['confirmed_suggestion']!r} does not fit the suggestion "
                          f"{suggested!r} and the reading {row['reader_class']!r}.")
        return
    referred = checker.flag(line, row, "suggestion_referred", blank_ok=True)
    if row["suggestion_referred"] and not suggested:
        checker.add(line, f"suggestion_referred {row['suggestion_referred']!r} without a suggested_class.")
        return
    if read_at and superseded_at and superseded_at < read_at:
        checker.add(line, "superseded_at is before read_at.")
        return
    if not ok or unsure is None or read_at is None or (row["superseded_at"] and superseded_at is None):
        return
    record.readings.append(Reading(line=line, reader=row["reader"], cell_class=row["reader_class"], unsure=unsure,
                                   read_at=read_at, superseded_at=superseded_at, suggested_class=suggested,
                                   suggestion_referred=bool(referred)))


_USERNAME = UnicodeUsernameValidator()


def _check_username(checker: _Checker, line: int, name: str, column: str) -> None:
    try:
        _USERNAME(name)
        if len(name) > 150:
            raise ValidationError("too long")
    except ValidationError:
        checker.add(line, f"{column} {name!r} is not a valid user name.")


def _check_record(record: Record, checker: _Checker) -> None:
    """The final class must follow from the readings and the adjudication, as this portal decides it."""
    v = record.values
    final, how = v["final_class"], v["decided_by"]
    current = [r for r in record.readings if r.superseded_at is None]
    readers = [r.reader for r in current]
    twice = sorted({name for name in readers if readers.count(name) > 1})
    if twice:
        checker.add(record.line, f"reader(s) {', '.join(twice)} have more than one current reading of the cell.")
    if final and record.needs_review:
        checker.add(record.line, "a cell with a final class cannot also wait for review (needs_review).")
    if v["adjudicated_class"] and how != DecidedBy.ADJUDICATION:
        checker.add(record.line, f"the cell was adjudicated, so decided_by must be adjudication, not {how!r}.")
    if how == DecidedBy.ADJUDICATION and v["adjudicated_class"] != final:
        checker.add(record.line, f"decided by adjudication as {v['adjudicated_class']!r}, but final_class is {final!r}.")
    elif how == DecidedBy.AGREEMENT and (not current or any(r.cell_class != final or r.unsure for r in current)):
        readings = ", ".join(r.cell_class + (" (not sure)" if r.unsure else "") for r in current) or "none"
        checker.add(record.line, f"decided by agreement as {final!r}, but the current readings are {readings}.")
    elif how == DecidedBy.SLIDE_VERIFICATION and (v["source"] != Source.SLIDE_CELL
                                                  or not any(r.cell_class == final for r in current)):
        checker.add(record.line, f"decided by slide verification as {final!r}, but the cell is not a slide cell "
                                 "with a current reading of that class.")


# --- Readers ------------------------------------------------------------------------------------
def _readers_resolve(records, checker: _Checker, *, create: bool) -> tuple[dict, list[str]]:
    """Reader and adjudicator names -> users of this portal (by name, or by this portal's pseudonym);
    the names to create as reader accounts (``create``), else a problem per unknown name."""
    User = get_user_model()
    first_line: dict[str, int] = {}
    for record in records.values():
        if record.values["adjudicated_by"]:
            first_line.setdefault(record.values["adjudicated_by"], record.line)
        for r in record.readings:
            first_line.setdefault(r.reader, r.line)
    users = {u.get_username(): u for u in User.objects.filter(username__in=list(first_line))}
    pending = [n for n in first_line if n not in users]
    if any(n.startswith("reader-") for n in pending):
        pseudonyms = {reader_pseudonym(pk): pk for pk in User.objects.values_list("pk", flat=True)}
        matched = {n: pseudonyms[n] for n in pending if n in pseudonyms}
        by_pk = User.objects.in_bulk(list(matched.values()))
        users.update({n: by_pk[pk] for n, pk in matched.items()})
        pending = [n for n in pending if n not in users]
    if pending and not create:
        for name in pending:
            checker.add(first_line[name], f"reader {name!r} is not a user of this portal. Create the account first, "
                                          "or import with 'create reader accounts' (--create-readers), or record "
                                          "every final class as one user's reading (--labelled-by).")
    return users, pending


# --- The import -------------------------------------------------------------------------------
def _open(source, *, limits: dict):
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return _Folder(source)
    if isinstance(source, (str, Path)):
        handle = open(source, "rb")  # noqa: SIM115 - the reader keeps reading it until closed
        try:
            return _Zip(handle, owned=handle, **limits)
        except BaseException:
            handle.close()
            raise
    return _Zip(source, **limits)


def _check_files(source, records: dict[str, Record], checker: _Checker, *, written: list[str],
                 progress: Callable[[int, int], None] | None) -> None:
    """Every file the manifest names: there, with its sha256, an image this lab stores, of its size.
    The de-identified pixels are written to storage at once (content-addressed, so a refused import
    removes exactly the files it wrote: ``written``)."""
    named = {r.values["path"] for r in records.values()}
    for name in source.names():
        if name in (MANIFEST, CLASSES, README) or _is_junk(name) or name in named:
            continue
        checker.add(None, f"{name} is in the archive but not in {MANIFEST}.")
    total = len(records)
    stored_by: dict[str, int] = {}
    # Pixels this portal already stores under that very sha256 were de-identified when stored: the
    # hash check suffices (a second import of an export reads each file once, decodes none).
    here = {sha: (w, h) for sha, w, h in CellImage.objects.filter(sha256__in=list(records))
            .values_list("sha256", "width", "height")}
    for i, record in enumerate(records.values()):
        if progress:
            progress(i, total)
        path = record.values["path"]
        data = source.read(path)
        if data is None:
            checker.add(record.line, f"the file {path} is not in the archive.")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.values["sha256"]:
            checker.add(record.line, f"sha256 mismatch: {path} hashes to {digest}, the manifest says "
                                     f"{record.values['sha256']}.")
            continue
        clean = None
        if digest in here:
            stored_sha256, (width, height) = digest, here[digest]
            if not checker.problems and not default_storage.exists(_storage_name(digest)):
                # the stored file was lost: the export's copy (the very same bytes) restores it
                written.append(default_storage.save(_storage_name(digest), ContentFile(data)))
        else:
            try:
                clean = sanitize_image(data, max_pixels=settings.UPLOAD_MAX_PIXELS,
                                       max_bytes=settings.UPLOAD_MAX_BYTES)
            except ImageRejected as exc:
                checker.add(record.line, f"{path} is refused: {exc.message}")
                continue
            stored_sha256, width, height = clean.sha256, clean.width, clean.height
        if (width, height) != (int(record.values["width"]), int(record.values["height"])):
            checker.add(record.line, f"{path} is {width}x{height}, the manifest says "
                                     f"{record.values['width']}x{record.values['height']}.")
            continue
        if stored_sha256 in stored_by:
            checker.add(record.line, f"{path} holds the same pixels as the file of line {stored_by[stored_sha256]}.")
            continue
        stored_by[stored_sha256] = record.line
        record.stored_sha256, record.width, record.height = stored_sha256, width, height
        if clean is not None and not checker.problems:
            name = _storage_name(clean.sha256)
            if not default_storage.exists(name):
                saved = default_storage.save(name, ContentFile(clean.png_bytes))
                written.append(saved)
                if saved != name:  # written a moment ago by another upload of the same pixels
                    default_storage.delete(saved)
                    written.remove(saved)
    if progress:
        progress(total, total)


def _remove_unused(written: list[str]) -> None:
    for name in written:
        sha = posixpath.splitext(posixpath.basename(name))[0]
        if not CellImage.objects.filter(sha256=sha).exists():
            default_storage.delete(name)


def cells_import_export(*, source, importer, channel: str, create_readers: bool = False, labelled_by=None,
                        progress: Callable[[str, int, int], None] | None = None,
                        max_entries: int | None = None, max_uncompressed: int | None = None,
                        acquisition_source=None) -> CellImportSummary:
    """Import a cell export (a zip file, an open zip, or an unpacked folder). Raises ImportRefused
    (every problem, with its manifest line) or ArchiveRejected (an unsafe archive); either way
    nothing is imported. ``progress(stage, done, total)`` follows the check of the files.

    Every attempt is audited: an import (``cells.import``, also one that found everything already
    here and wrote nothing) in the transaction of its writes; a refusal (``cells.import_refused``,
    with its problems) after the refused work was rolled back, so that the record of it stays.
    ``acquisition_source`` (a source, its id or name): the source of every cell new here (an unknown or
    inactive one refuses the import, audited likewise); none: the source each cell's manifest row names
    (``acquisition_source``, matched by name among this portal's sources; a name it does not know
    refuses the import), the lab's default for a row that names none (an export made before the
    column)."""
    policy = "labelled_by" if labelled_by is not None else ("create_readers" if create_readers else "readers")
    try:
        return _import_export(source=source, importer=importer, channel=channel, create_readers=create_readers,
                              labelled_by=labelled_by, progress=progress, max_entries=max_entries,
                              max_uncompressed=max_uncompressed, acquisition_source=acquisition_source)
    except (ImportRefused, ArchiveRejected, ValidationError) as exc:
        problems = (exc.problems if isinstance(exc, ImportRefused) else [exc.message]
                    if isinstance(exc, ArchiveRejected) else list(exc.messages))
        import_refusal_record(actor=importer, kind="export", channel=channel, problems=problems,
                              reader_policy=policy)
        raise


def labelled_by_resolve(*, name: str, importer, channel: str, kind: str = "export"):
    """The user an import (``kind``: an export, or an ImageFolder ``folder``) records its classes under
    (``--labelled-by``; None for no name). A name of no user refuses the import (ValidationError), and
    the refusal is audited like any other."""
    if not name:
        return None
    user = get_user_model().objects.filter(username=name).first()
    if user is None:
        problem = f"No user named {name!r}."
        import_refusal_record(actor=importer, kind=kind, channel=channel, problems=[problem],
                              reader_policy="labelled_by")
        raise ValidationError({"labelled_by": problem})
    return user


def _import_export(*, source, importer, channel: str, create_readers: bool, labelled_by, progress,
                   max_entries: int | None, max_uncompressed: int | None, acquisition_source) -> CellImportSummary:
    given = not (acquisition_source is None or (isinstance(acquisition_source, str) and not acquisition_source.strip()))
    acquisition_source = source_resolve(value=acquisition_source)
    limits = {"max_entries": max_entries or settings.ZIP_MAX_ENTRIES,
              "max_uncompressed": max_uncompressed or settings.ZIP_MAX_UNCOMPRESSED}
    reader = _open(source, limits=limits)
    written: list[str] = []
    try:
        exported_names, problems = _read_classes(reader)
        checker = _Checker({c.code: c for c in CellClass.objects.all()}, exported_names)
        checker.problems.extend(problems)
        records = _parse_manifest(reader, checker)
        users, to_create = ({}, []) if labelled_by is not None else _readers_resolve(records, checker,
                                                                                       create=create_readers)
        sources = ({} if given else _sources_resolve(records, checker))
        if checker.problems:  # the manifest alone is wrong: say so before reading thousands of images
            raise ImportRefused(checker.problems)
        _check_files(reader, records, checker, written=written,
                     progress=(lambda d, t: progress("checking", d, t)) if progress else None)
        if checker.problems:
            raise ImportRefused(checker.problems)
        with transaction.atomic():
            summary = _write(records, users=users, to_create=to_create, importer=importer, channel=channel,
                             labelled_by=labelled_by, classes=checker.classes, acquisition_source=acquisition_source,
                             sources=sources)
    except BaseException:
        _remove_unused(written)
        raise
    finally:
        reader.close()
    if summary.changed:
        planner_statistics_refresh()
    return summary


def _sources_resolve(records: dict[str, Record], checker: _Checker) -> dict[str, SourceModel]:
    """The sources (microscopes/cameras) the manifest names, by name (any case), among this portal's,
    inactive ones included (the cells were taken with them). A name this portal does not know is a
    problem: a new lab's cells must not count as the default microscope's."""
    found: dict[str, SourceModel] = {}
    for record in records.values():
        name = record.values["acquisition_source"].strip()
        if not name or name in found:
            continue
        source = SourceModel.objects.filter(name__iexact=name).first()
        if source is None:
            checker.add(record.line, f"acquisition_source {name!r} is not a source of this portal; add it on the "
                                     "Sources page first, or import every new cell under one source (--source).")
            found[name] = None
        else:
            found[name] = source
    return found


def _readings_of(image: CellImage) -> tuple[set, tuple | None]:
    """A stored cell's readings and adjudication, in the terms the manifest compares."""
    readings = {(lb.labeller_id, lb.cell_class.code, lb.unsure, lb.created_at, lb.superseded_at,
                 lb.suggested_class.code if lb.suggested_class_id else "")
                for lb in image.labels.select_related("cell_class", "suggested_class")}
    adjudication = image.adjudications.select_related("cell_class").order_by("-id").first()
    return readings, ((adjudication.reviewer_id, adjudication.cell_class.code, adjudication.created_at)
                      if adjudication else None)


def _redecided_reason(exported: str | None, final: str | None, needs_review: bool, *, readings: int,
                      split: str, required: int) -> str:
    """Why a new cell's final class here is not the export's: this lab's rule decided otherwise."""
    was = f"final {exported} in the export" if exported else "undecided in the export"
    rule = f"{readings} current reading(s); this lab requires {required} for a {split} cell"
    if final:
        return f"{was}; final {final} here ({rule})"
    if needs_review:
        return f"{was}; waits for a reviewer here ({rule})"
    return f"{was}; waits for more readings here ({rule})"


def _write(records: dict[str, Record], *, users: dict, to_create: list[str], importer, channel: str,
           labelled_by, classes: dict[str, CellClass], acquisition_source, sources: dict) -> CellImportSummary:
    """``acquisition_source``: the source of a new cell whose manifest names none in ``sources``."""
    User = get_user_model()
    summary = CellImportSummary()
    lab, now = LabSettings.get(), timezone.now()
    for name in to_create:
        user = User(username=name, is_active=False)
        user.set_unusable_password()
        user.save()
        users[name] = user
        summary.readers_created.append(name)
        audit_record(actor=importer, action=AuditAction.USER_CREATE_READER, target=user,
                     after={"username": name, "active": False, "reason": "reader of imported cells"})

    def planned(record: Record) -> tuple[list[Reading], Reading | None]:
        """The readings to store and the adjudication (as a Reading), per the reader policy."""
        v = record.values
        if labelled_by is not None:
            if not v["final_class"]:
                return [], None
            return [Reading(record.line, labelled_by.get_username(), v["final_class"], False, record.decided_at,
                            None, "")], None
        adjudication = (Reading(record.line, v["adjudicated_by"], v["adjudicated_class"], False,
                                record.adjudicated_at, None, "") if v["adjudicated_class"] else None)
        return record.readings, adjudication

    def user_of(name: str):
        return labelled_by if labelled_by is not None else users[name]

    existing = {im.sha256: im for im in CellImage.objects.filter(
        sha256__in=[r.stored_sha256 for r in records.values()]).select_related("final_label")}
    new_images, fills = [], []
    for record in records.values():
        summary.reencoded += record.stored_sha256 != record.values["sha256"]
        image = existing.get(record.stored_sha256)
        readings, adjudication = planned(record)
        if image is None:
            new_images.append(record)
            continue
        have, have_adjudication = _readings_of(image)
        want = {(user_of(r.reader).pk, r.cell_class, r.unsure, r.read_at, r.superseded_at, r.suggested_class)
                for r in readings}
        want_adjudication = ((user_of(adjudication.reader).pk, adjudication.cell_class, adjudication.read_at)
                             if adjudication else None)
        if have == want and have_adjudication == want_adjudication and image.split == record.values["split"]:
            summary.images_present += 1
        elif not have and have_adjudication is None and image.final_label_id is None \
                and image.split == record.values["split"]:
            fills.append((record, image))  # here without any reading: the export's readings complete it
        else:
            reason = (duplicate_message(image=image, split=record.values["split"])
                      if image.split != record.values["split"] else
                      "already here with other readings; kept as it is here")
            summary.kept.append({"sha256": image.sha256, "line": record.line, "image": image.pk, "reason": reason})

    by_split: dict[str, UploadBatch] = {}
    created: list[tuple[Record, CellImage]] = []
    for record in new_images:
        v = record.values
        split = v["split"]
        if split not in by_split:
            by_split[split] = UploadBatch.objects.create(created_by=importer, channel=channel, split=split)
        created.append((record, CellImage(
            sha256=record.stored_sha256, file=_storage_name(record.stored_sha256), width=record.width,
            height=record.height, original_format=v["original_format"], source=v["source"], split=split,
            sample_code=v["sample_code"], batch=by_split[split], uploaded_by=importer,
            acquisition_source=sources.get(v["acquisition_source"].strip()) or acquisition_source)))
    CellImage.objects.bulk_create([im for _, im in created], batch_size=500)
    for record, image in created:
        image.uploaded_at = record.uploaded_at  # auto_now_add wrote the time of the import
    CellImage.objects.bulk_update([im for _, im in created], ["uploaded_at"], batch_size=500)

    labels, adjudications, events = [], [], []
    new_ids = {im.pk for _, im in created}
    for record, image in created + fills:
        readings, adjudication = planned(record)
        for r in readings:
            labels.append(Label(image=image, labeller=user_of(r.reader), cell_class=classes[r.cell_class],
                                unsure=r.unsure, suggested_class=classes.get(r.suggested_class) if r.suggested_class
                                else None, suggestion_referred=r.suggestion_referred, created_at=r.read_at,
                                superseded_at=r.superseded_at))
        if adjudication is not None:
            adjudications.append(Adjudication(image=image, reviewer=user_of(adjudication.reader),
                                              cell_class=classes[adjudication.cell_class],
                                              note=record.values["adjudication_note"][:500],
                                              created_at=adjudication.read_at))
        v = record.values
        current = [(r.cell_class, r.unsure) for r in readings if r.superseded_at is None]
        final, needs_review = lab.final_label_decide(
            split=image.split, source=image.source, readings=current,
            adjudicated=adjudication.cell_class if adjudication else None)
        exported = v["final_class"] or None
        image.final_label = classes[final] if final else None
        image.final_label_at = (record.decided_at if final == exported else now) if final else None
        image.needs_review = needs_review
        image.current_label_count = len(current)
        if (final, needs_review) != (exported, bool(record.needs_review) and labelled_by is None):
            summary.redecided.append({"sha256": image.sha256, "line": record.line, "image": image.pk,
                                      "reason": _redecided_reason(exported, final, needs_review,
                                                                  readings=len(current), split=image.split,
                                                                  required=lab.labels_required(
                                                                      image.split, source=image.source))})
        events.append(AuditEvent(
            actor=importer, action=AuditAction.IMAGE_IMPORT, target_type="CellImage", target_id=str(image.pk),
            after={"sha256": image.sha256, "split": image.split, "source": image.source,
                   "final_label": final, "needs_review": needs_review, "export_final_label": exported,
                   "export_decided_by": v["decided_by"] or None,
                   "readings": len(readings), "adjudicated": adjudication is not None,
                   "new_image": image.pk in new_ids,
                   "manifest_line": record.line}))
    # auto_now_add writes the time of the import on create: each reading's own time is put back after
    reading_times = [lb.created_at for lb in labels]
    created_labels = Label.objects.bulk_create(labels, batch_size=1000)
    for label, when in zip(created_labels, reading_times):
        label.created_at = when
    Label.objects.bulk_update(created_labels, ["created_at"], batch_size=1000)
    adjudication_times = [a.created_at for a in adjudications]
    created_adjudications = Adjudication.objects.bulk_create(adjudications, batch_size=1000)
    for adjudication, when in zip(created_adjudications, adjudication_times):
        adjudication.created_at = when
    Adjudication.objects.bulk_update(created_adjudications, ["created_at"], batch_size=1000)
    CellImage.objects.bulk_update([im for _, im in created + fills],
                                  ["final_label", "final_label_at", "needs_review", "current_label_count"],
                                  batch_size=500)
    AuditEvent.objects.bulk_create(events, batch_size=1000)

    summary.images_created = len(created)
    summary.readings_created = len(labels)
    summary.adjudications_created = len(adjudications)
    for batch in by_split.values():
        batch.stored = sum(1 for _, im in created if im.batch_id == batch.pk)
        batch.save(update_fields=["stored"])
        summary.batches.append(batch.pk)
    # every import is audited, also one that wrote nothing (everything was already here)
    audit_record(actor=importer, action=AuditAction.CELLS_IMPORT, target=("Import", "cells"), after={
        "channel": channel, "reader_policy": "labelled_by" if labelled_by is not None else "readers",
        **{k: v for k, v in summary.as_dict().items() if k not in ("kept", "redecided")},
        "kept": len(summary.kept), "redecided": len(summary.redecided), "changed": summary.changed})
    if summary.changed:
        new_cells = [im.pk for _, im in created if im.source == Source.CELL]
        if new_cells:
            classification_enqueue_on_commit(image_ids=new_cells)
    return summary
