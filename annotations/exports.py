"""Export of the lab's cells: a zip that any tool reads without LeukoPortal.

Layout of the archive (``CELLS_EXPORT_README`` is written into it as README.txt)::

    README.txt
    classes.csv                    the taxonomy: code, name, hotkey, active, display_order, is_leukocyte, is_abstain
    manifest.csv                   one row per reading (see MANIFEST_COLUMNS)
    <class code>/<sha256>.png      the stored de-identified pixels, byte for byte (an ImageFolder tree)
    undecided/<sha256>.png         cells still without a final class (only when the selection asks for them)

The archive is streamed: the manifest is written first to a spooled temporary file (memory up to
1 MB, then disk), then every entry is read from storage piece by piece while the response is sent
(``archives.zip_stream_chunks``, on the ``zipstream-ng`` library). Nothing is compressed: PNGs are
compressed already, and a stored zip's size is known in advance (a ``Content-Length``, so browsers
and ``curl`` show the progress of the download).

No user name or e-mail leaves unless the lab admin ticks "include reader names" (otherwise each
reader is a stable pseudonymous id, ``reader-`` and 12 hex digits, the same in every export of
this portal and not reversible outside it); sample codes (a slide's accession code on its cells)
leave only when "include accession codes" is ticked. Free text written by users (adjudication
notes) may name people, so it leaves only with the reader names.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils.crypto import salted_hmac

from competency.exam import exam_image_ids

from .archives import zip_stream_chunks
from .audit import audit_record
from .models import Adjudication, AuditAction, CellClass, CellImage, Label, Source, Split

UNDECIDED = "undecided"  # folder of the cells without a final class (not a class code)
MANIFEST = "manifest.csv"
CLASSES = "classes.csv"
README = "README.txt"


class DecidedBy:
    """How a final class was decided."""

    AGREEMENT = "agreement"  # the readers' current labels agree (no adjudication)
    ADJUDICATION = "adjudication"  # a reviewer decided a dispute
    SLIDE_VERIFICATION = "slide_verification"  # a reviewer verified the cell on a slide
    ALL = (AGREEMENT, ADJUDICATION, SLIDE_VERIFICATION)


# Per image (repeated on each of its rows), then per reading (empty on the one row of a cell without a reading).
IMAGE_COLUMNS = [
    "path", "sha256", "split", "source", "width", "height", "original_format", "uploaded_at", "sample_code",
    "final_class", "decided_by", "decided_at", "needs_review",
    "adjudicated_by", "adjudicated_class", "adjudicated_at", "adjudication_note",
    "acquisition_source",
]
READING_COLUMNS = [
    "reader", "reader_class", "unsure", "read_at", "superseded_at",
    "suggested_class", "suggestion_model_version", "confirmed_suggestion", "suggestion_referred",
]
MANIFEST_COLUMNS = IMAGE_COLUMNS + READING_COLUMNS
# columns an export made before them lacks (an import reads such an export as before)
LATER_COLUMNS = ("acquisition_source", "suggestion_referred")
CLASSES_COLUMNS = ["code", "name", "hotkey", "active", "display_order", "is_leukocyte", "is_abstain"]

CELLS_EXPORT_README = """LeukoPortal cell export
=======================

<class code>/<sha256>.png   the de-identified cell images (pixels only, PNG), one folder per final class:
                            torchvision.datasets.ImageFolder and most training tools read this tree as is.
undecided/<sha256>.png      cells without a final class yet (present only when the export asked for them;
                            remove this folder before training).
classes.csv                 the lab's taxonomy: code, name, hotkey, active, display order, leukocyte or not.
manifest.csv                one row per expert reading; a cell without a reading has one row with empty
                            reading columns. Per cell: path, sha256 of the file, split (train / heldout), source
                            (cell: uploaded; slide_cell: found in a smear field and verified on the slide),
                            final class and how it was decided (agreement of the readers, adjudication by a
                            reviewer, or slide verification), the adjudication if any, and acquisition_source:
                            the name of the microscope/camera the image comes from. Per reading: reader id, class,
                            'not sure', when it was made and when it was replaced (superseded_at: empty for the
                            reader's current reading), the model's suggestion the reader was shown, whether the
                            reader confirmed it, and suggestion_referred: the model had referred the cell, so the
                            suggestion was its best guess, not a call it accepted.
Times are ISO 8601 in UTC. Reader ids are pseudonyms unless the export included reader names.
Read it back into a LeukoPortal with: manage.py import_cells THIS.zip  (or the Import page).
"""


@dataclass(frozen=True)
class CellSelection:
    """Which cells an export takes. ``split`` None: both; ``classes`` empty: every class; ``status``:
    ``final`` (cells with a final class), ``adjudicated`` (decided by a reviewer) or ``all`` (also the
    cells still undecided); ``sources``: ``cell`` (uploads) and/or ``slide_cell`` (cells verified on a
    slide); the date range (inclusive) applies to the upload date or, with ``date_field="decided"``,
    to the date the final class was decided."""

    split: str | None = None
    classes: tuple[str, ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None
    date_field: str = "uploaded"
    status: str = "final"
    sources: tuple[str, ...] = (Source.CELL, Source.SLIDE_CELL)
    include_names: bool = False
    include_accessions: bool = False

    STATUSES = ("final", "adjudicated", "all")
    DATE_FIELDS = ("uploaded", "decided")
    SOURCES = (Source.CELL, Source.SLIDE_CELL)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["start"] = self.start.isoformat() if self.start else None
        out["end"] = self.end.isoformat() if self.end else None
        out["classes"], out["sources"] = list(self.classes), list(self.sources)
        return out


def _as_list(value) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


def _as_date(value, name: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValidationError({name: f"{value!r} is not a date (YYYY-MM-DD)."}) from None


def cell_selection_clean(*, split=None, classes=None, start=None, end=None, date_field="uploaded", status="final",
                         sources=None, include_names=False, include_accessions=False) -> CellSelection:
    """A checked selection, or ValidationError naming the field (one home for the form, the API and the command)."""
    split = split or None
    if split in ("all", "both"):
        split = None
    if split is not None and split not in Split.values:
        raise ValidationError({"split": f"Unknown split {split!r}; use train, heldout or all."})
    codes = _as_list(classes)
    known = set(CellClass.objects.filter(code__in=codes).values_list("code", flat=True))
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise ValidationError({"classes": f"Unknown class code(s): {', '.join(unknown)}."})
    start, end = _as_date(start, "start"), _as_date(end, "end")
    if start and end and start > end:
        raise ValidationError({"end": "The end of the date range is before its start."})
    if date_field not in CellSelection.DATE_FIELDS:
        raise ValidationError({"date_field": f"Use one of {', '.join(CellSelection.DATE_FIELDS)}."})
    if status not in CellSelection.STATUSES:
        raise ValidationError({"status": f"Use one of {', '.join(CellSelection.STATUSES)}."})
    chosen = _as_list(sources) or list(CellSelection.SOURCES)
    bad = [s for s in chosen if s not in CellSelection.SOURCES]
    if bad:
        raise ValidationError({"sources": f"Unknown source(s) {', '.join(bad)}; use cell and/or slide_cell."})
    return CellSelection(split=split, classes=tuple(dict.fromkeys(codes)), start=start, end=end,
                         date_field=date_field, status=status, sources=tuple(dict.fromkeys(chosen)),
                         include_names=bool(include_names), include_accessions=bool(include_accessions))


def cells_for_export(*, selection: CellSelection) -> QuerySet[CellImage]:
    """The cells a selection takes, in id order. Slide cells only once a reviewer verified them
    (their verification is a reading); slide fields never (they are exported with their slides)."""
    verified = Exists(Label.objects.filter(image=OuterRef("pk")))
    by_source = Q(pk__in=[])
    if Source.CELL in selection.sources:
        by_source |= Q(source=Source.CELL)
    if Source.SLIDE_CELL in selection.sources:
        by_source |= Q(verified, source=Source.SLIDE_CELL)
    qs = CellImage.objects.filter(by_source)
    if selection.split:
        qs = qs.filter(split=selection.split)
    if selection.status == "final":
        qs = qs.filter(final_label__isnull=False)
    elif selection.status == "adjudicated":
        qs = qs.filter(Exists(Adjudication.objects.filter(image=OuterRef("pk"))))
    if selection.classes:
        qs = qs.filter(final_label__code__in=selection.classes)
    when = "uploaded_at" if selection.date_field == "uploaded" else "final_label_at"
    if selection.start:
        qs = qs.filter(**{f"{when}__date__gte": selection.start})
    if selection.end:
        qs = qs.filter(**{f"{when}__date__lte": selection.end})
    return qs.order_by("pk")


def reader_pseudonym(user_id: int) -> str:
    """A reader's stable pseudonymous id: the same in every export of this portal (keyed on its secret
    key), meaningless outside it."""
    return "reader-" + salted_hmac("leukoportal.exports.reader", str(user_id), algorithm="sha256").hexdigest()[:12]


def _reader(user, include_names: bool) -> str:
    return user.get_username() if include_names else reader_pseudonym(user.pk)


def _time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).isoformat() if value else ""


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def decided_by(image: CellImage, adjudication: Adjudication | None) -> str:
    """How the image's final class was decided ("" while it has none)."""
    if image.final_label_id is None:
        return ""
    if adjudication is not None:
        return DecidedBy.ADJUDICATION
    if image.source == Source.SLIDE_CELL:
        return DecidedBy.SLIDE_VERIFICATION
    return DecidedBy.AGREEMENT


def image_path(image: CellImage) -> str:
    folder = image.final_label.code if image.final_label_id else UNDECIDED
    return f"{folder}/{image.sha256}.png"


def manifest_image_rows(image: CellImage, *, selection: CellSelection) -> list[list[str]]:
    """The manifest's rows of one image (``final_label``, ``labels`` and ``adjudications`` prefetched as
    :func:`_export_queryset` does): one per reading, or one with empty reading columns."""
    names, codes = selection.include_names, selection.include_accessions
    adjudications = list(image.adjudications.all())
    adjudication = adjudications[-1] if adjudications else None
    head = [
        image_path(image), image.sha256, image.split, image.source, str(image.width), str(image.height),
        image.original_format, _time(image.uploaded_at), image.sample_code if codes else "",
        image.final_label.code if image.final_label_id else "", decided_by(image, adjudication),
        _time(image.final_label_at), _flag(image.needs_review),
    ]
    if adjudication is not None:
        head += [_reader(adjudication.reviewer, names), adjudication.cell_class.code, _time(adjudication.created_at),
                 adjudication.note if names else ""]
    else:
        head += ["", "", "", ""]
    head.append(image.acquisition_source.name)
    readings = list(image.labels.all())
    if not readings:
        return [head + [""] * len(READING_COLUMNS)]
    return [
        head + [
            _reader(label.labeller, names), label.cell_class.code, _flag(label.unsure), _time(label.created_at),
            _time(label.superseded_at), label.suggested_class.code if label.suggested_class_id else "",
            str(label.suggestion_model_version_id or ""), _flag(label.confirmed_suggestion),
            _flag(label.suggestion_referred) if label.suggested_class_id else "",
        ]
        for label in readings
    ]


def _export_queryset(qs: QuerySet[CellImage]) -> QuerySet[CellImage]:
    labels = Label.objects.select_related("labeller", "cell_class", "suggested_class").order_by("created_at", "id")
    adjudications = Adjudication.objects.select_related("reviewer", "cell_class").order_by("id")
    return qs.select_related("final_label", "acquisition_source").prefetch_related(
        Prefetch("labels", queryset=labels), Prefetch("adjudications", queryset=adjudications))


def classes_rows() -> Iterator[list[str]]:
    yield CLASSES_COLUMNS
    for c in CellClass.objects.order_by("display_order", "code"):
        yield [c.code, c.name, c.hotkey, _flag(c.active), str(c.display_order), _flag(c.is_leukocyte),
               _flag(c.is_abstain)]


def csv_bytes(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _file_chunks(handle, size: int = 1024 * 1024) -> Iterator[bytes]:
    try:
        while chunk := handle.read(size):
            yield chunk
    finally:
        handle.close()


def storage_entry(zs, name: str, arcname: str) -> None:
    """Add a stored file by path (filesystem storage), else as a stream of known size."""
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        zs.add(_file_chunks(default_storage.open(name, "rb")), arcname, size=default_storage.size(name))
    else:
        zs.add_path(path, arcname)


# --- Progress (the export page polls it) -------------------------------------------------------
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class ExportProgress:
    """How far a download has got, kept in the cache for the page that started it (by a token it made).

    Written at most every quarter of a second, and once at the end."""

    def __init__(self, *, user_id: int, token: str | None):
        self.key = f"export-progress:{user_id}:{token}" if token and _TOKEN.match(token) else None
        self._last = 0.0

    @staticmethod
    def read(*, user_id: int, token: str) -> dict | None:
        if not _TOKEN.match(token or ""):
            raise ValidationError({"token": "A progress token is 8 to 64 letters, digits, '-' or '_'."})
        return cache.get(f"export-progress:{user_id}:{token}")

    def update(self, done: int, total: int, *, unit: str = "files", finished: bool = False) -> None:
        if self.key is None:
            return
        now = time.monotonic()
        finished = finished or (total is not None and done >= total)
        if finished or done <= 1 or now - self._last >= 0.25:
            self._last = now
            cache.set(self.key, {"done": done, "total": total, "unit": unit, "finished": finished}, 3600)


# --- The export -----------------------------------------------------------------------------
@dataclass
class ZipExport:
    """An archive ready to stream: iterate ``chunks`` once (it closes what it opened when done or closed)."""

    filename: str
    chunks: Iterator[bytes]
    size: int | None
    counts: dict = field(default_factory=dict)


@contextmanager
def _one_snapshot():
    """Read the whole manifest from one snapshot of the database (PostgreSQL: a repeatable-read
    transaction), so that a cell labelled meanwhile never appears half old, half new."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def export_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def cells_export(*, selection: CellSelection, actor, channel: str,
                 progress: Callable[[int, int], None] | None = None) -> ZipExport:
    """Prepare the export of the selected cells (manifest written, every image file found) and audit
    it; the archive itself is made while ``chunks`` is read. A missing image file is an error here,
    before the first byte is sent. The cells of a proficiency test open for ``actor`` are held back
    (their reference labels and readings), and the audit says how many."""
    from zipstream import ZipStream

    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024, mode="w+b")
    try:
        digest = hashlib.sha256()

        def write(rows) -> None:
            data = csv_bytes(rows)
            digest.update(data)
            spool.write(data)

        write([MANIFEST_COLUMNS])
        zs = ZipStream(sized=True)
        zs.add(CELLS_EXPORT_README, README)
        zs.add(csv_bytes(classes_rows()), CLASSES)
        images: list[tuple[str, str]] = []  # (storage name, path in the archive); the manifest goes first
        n_readings = 0
        with _one_snapshot():
            held_back = exam_image_ids(actor)
            for image in _export_queryset(cells_for_export(selection=selection).exclude(pk__in=held_back)
                                          ).iterator(chunk_size=500):
                rows = manifest_image_rows(image, selection=selection)
                write(rows)
                n_readings += sum(1 for r in rows if r[len(IMAGE_COLUMNS)])
                images.append((image.file.name, rows[0][0]))
        zs.add(_file_chunks(spool), MANIFEST, size=spool.tell())
        spool.seek(0)
        for name, arcname in images:
            try:
                storage_entry(zs, name, arcname)
            except FileNotFoundError:
                raise ValidationError(f"The stored file of the cell {arcname} is missing ({name}).") from None
        size = len(zs)
    except BaseException:
        spool.close()
        raise
    counts = {"images": len(images), "readings": n_readings, "bytes": size, "manifest_sha256": digest.hexdigest()}
    if held_back:
        counts["held_back_open_test"] = len(held_back)
    audit_record(actor=actor, action=AuditAction.CELLS_EXPORT, target=("Export", "cells"),
                 after={"channel": channel, "selection": selection.as_dict(), **counts})
    total = len(images) + 3

    def chunks() -> Iterator[bytes]:
        try:
            yield from zip_stream_chunks(zs, on_entry=(lambda n: progress(n, total)) if progress else None)
            if progress:
                progress(total, total)
        finally:
            spool.close()

    return ZipExport(filename=f"leukoportal-cells-{export_stamp()}.zip", chunks=chunks(), size=size, counts=counts)
