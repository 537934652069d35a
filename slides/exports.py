"""Export of signed slides: per slide its images, a COCO file of its counted cells, and the signed report.

Layout of the archive::

    README.txt
    classes.csv                                  the taxonomy (as in a cell export)
    slides.csv                                   one row per slide: folder, version, release status, ...
    slide-<id>-v<version>/images/<sha256>.png    the smear fields (a slide of cropped cells: the cells)
    slide-<id>-v<version>/annotations.coco.json  COCO detection: one annotation per counted cell
    slide-<id>-v<version>/report.csv             the signed report, as the report page's CSV
    slide-<id>-v<version>/report.fhir.json       the signed report, FHIR R4 DiagnosticReport

In the COCO file a category is a class of the taxonomy (its code is the category's name; the ids are
the same in every slide of one export), an annotation's box is the cell's box in field pixels
([x, y, width, height]; a cropped cell's box is the whole image), its category the cell's final
class, and ``attributes`` carries the model's call (class, top class, confidence, agreement,
reasons, out-of-distribution score) beside it. A slide's accession code leaves only when "include
accession codes" is ticked (otherwise the report files name the slide by its folder), the signer's
and verifiers' names only with "include reader names" (otherwise their pseudonymous ids).

The archive is streamed slide by slide (only one slide's files are held at a time).

The signed report's formats are built here too (``report_csv_rows``, ``fhir_report``,
``hl7_report``), for the report pages, the API and this export alike.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from annotations.archives import zip_stream_chunks
from annotations.exports import (
    CLASSES,
    README,
    ZipExport,
    _as_date,
    _as_list,
    classes_rows,
    csv_bytes,
    export_stamp,
    reader_pseudonym,
    storage_entry,
)
from annotations.audit import audit_record
from annotations.models import AuditAction, CellClass
from competency.exam import exam_image_ids

from . import fhir, hl7, selectors
from .morphology.report import csv_rows as red_cell_csv_rows
from .release import CSV_COLUMNS as RELEASE_CSV_COLUMNS
from .release import csv_values as release_csv_values
from .release import report_with_names
from .models import Slide, SlideCell
from .platelets.report import csv_rows as platelet_csv_rows

SLIDES_INDEX = "slides.csv"
COCO = "annotations.coco.json"
INDEX_COLUMNS = ["folder", "accession", "version", "release_status", "kind", "signed_at", "signed_by",
                 "fields", "counted_cells", "leukocytes", "model_version"]

SLIDES_EXPORT_README = """LeukoPortal signed slides export
================================

slides.csv                      one row per slide: its folder, version, release status (final, corrected, superseded),
                                kind, when and by whom it was signed, fields, counted cells.
classes.csv                     the lab's taxonomy (code, name, hotkey, active, ...).
<slide>/images/<sha256>.png     the slide's de-identified smear fields (for a slide of cropped cells: the cells).
<slide>/annotations.coco.json   COCO object detection (pycocotools.coco.COCO reads it): one annotation per counted
                                cell; bbox [x, y, width, height] in the field's pixels; category = the final class;
                                attributes = the model's class, top class, confidence, agreement, reasons and
                                out-of-distribution score. An image's file_name is relative to <slide>/images/.
<slide>/report.csv              the signed differential (as the report page's CSV).
<slide>/report.fhir.json        the signed differential as a FHIR R4 DiagnosticReport.
Accession codes and user names appear only if the export included them (else the slide folder and pseudonyms).
"""


# --- The signed report in its formats (page CSV, FHIR, HL7; the API and this export use the same) ---

def report_csv_rows(slide: Slide, *, report: dict | None = None) -> list[list]:
    """One row per class; the report's status and the signature's warnings and reason repeat on
    every row so that each row stands alone. ``report``: the slide's, unless given (an export's
    copy with pseudonyms)."""
    report = slide.report if report is None else report
    release = selectors.slide_report_release(slide=slide)
    status = release["status"] + (f" (by v{release['successor'].version})" if release["superseded"] else "")
    warnings = " ".join(report.get("sign_warnings") or [])
    reason = report.get("sign_reason") or ""
    domain = (report.get("domain") or {}).get("message", "") if (report.get("domain") or {}).get("unlike") else ""
    rows = [["accession", "version", "class", "name", "count", "percent", "ci95_low", "ci95_high",
             "absolute_10e9_per_L", "per_100_wbc", "note", "report_status", "signature_warnings", "signature_reason",
             "domain_warning"]]
    for r in report["rows"]:
        if not r["count"] and "percent" not in r and "per_100_wbc" not in r:
            continue
        unassessed = r.get("not_assessed") and not r["count"]
        iv = ["", ""] if unassessed else (r.get("interval") or ["", ""])
        rows.append([slide.code, slide.version, r["code"], r["name"], r["count"],
                     "" if unassessed else r.get("percent", ""), iv[0], iv[1],
                     "" if unassessed or r.get("absolute") is None else r["absolute"],
                     "" if unassessed else r.get("per_100_wbc", ""), r.get("note", ""), status, warnings, reason,
                     domain])
    rows += platelet_csv_rows(report, accession=slide.code, version=slide.version,
                              tail=[status, warnings, reason, domain])
    rows += red_cell_csv_rows(report, accession=slide.code, version=slide.version, tail=[status, warnings, reason, domain])
    _release_columns(rows, report)
    return rows


def _release_columns(rows: list[list], report: dict) -> None:
    """The interpretive comment and the two-step release, repeated on every row (slides.release)."""
    rows[0] += RELEASE_CSV_COLUMNS
    values = release_csv_values(report)
    for row in rows[1:]:
        row += values


def lis_arguments(slide: Slide) -> dict:
    """The signed report's arguments for the FHIR and HL7 builders."""
    release = selectors.slide_report_release(slide=slide)
    return {"report": slide.report, "accession": slide.code, "version": slide.version,
            "names": dict(CellClass.objects.values_list("code", "name")), "superseded": release["superseded"],
            "successor_version": release["successor"].version if release["successor"] else None,
            "correction_reason": slide.correction_reason}


def fhir_report(slide: Slide) -> dict:
    """The signed report as a FHIR R4 DiagnosticReport (the report page's and the API's)."""
    return fhir.diagnostic_report(issued=slide.signed_at.isoformat(), performer=slide.signed_by.get_username(),
                                  **lis_arguments(slide))


def hl7_report(slide: Slide) -> str:
    """The signed report as an HL7 v2.5.1 ORU^R01 message."""
    now = timezone.now()
    return hl7.oru_r01(signed_at=slide.signed_at, signer=slide.signed_by.get_username(),
                       control_id=f"LP{slide.pk}-{now:%Y%m%d%H%M%S%f}", created_at=now, **lis_arguments(slide))


def lis_renderers(slide: Slide, *, superseded: bool = False, successor_version: int | None = None):
    """The LIS outbox's renderers of this signed version (lis.outbox.results_outbox_add): its HL7
    ORU^R01 for a given control ID and MSH sender/receiver, and its FHIR DiagnosticReport. The release
    status is given, not read back (inside the signature's transaction a withdrawn version's successor
    is being signed)."""
    @functools.cache
    def arguments() -> dict:  # read once, and only when a destination needs the report
        return dict(lis_arguments(slide), superseded=superseded, successor_version=successor_version)

    def render_hl7(**msh) -> str:
        return hl7.oru_r01(signed_at=slide.signed_at, signer=slide.signed_by.get_username(), **arguments(), **msh)

    def render_fhir() -> dict:
        return fhir.diagnostic_report(issued=slide.signed_at.isoformat(), performer=slide.signed_by.get_username(),
                                      **arguments())

    return render_hl7, render_fhir


HL7_CONTENT_TYPE = "x-application/hl7-v2+er7; charset=utf-8"


@dataclass(frozen=True)
class SlideSelection:
    """Signed slides: the given ids (empty: all), signed in the date range (inclusive); a version a newer
    signed one superseded only with ``include_superseded``."""

    slide_ids: tuple[int, ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None
    include_superseded: bool = False
    include_names: bool = False
    include_accessions: bool = False

    def as_dict(self) -> dict:
        out = asdict(self)
        out["slide_ids"] = list(self.slide_ids)
        out["start"] = self.start.isoformat() if self.start else None
        out["end"] = self.end.isoformat() if self.end else None
        return out


def slide_selection_clean(*, slide_ids=None, start=None, end=None, include_superseded=False, include_names=False,
                          include_accessions=False) -> SlideSelection:
    ids = []
    for value in _as_list(slide_ids):
        if not value.isdigit():
            raise ValidationError({"slide_ids": f"{value!r} is not a slide id."})
        ids.append(int(value))
    start, end = _as_date(start, "start"), _as_date(end, "end")
    if start and end and start > end:
        raise ValidationError({"end": "The end of the date range is before its start."})
    if ids:
        signed = set(Slide.objects.filter(pk__in=ids, status=Slide.Status.SIGNED).values_list("pk", flat=True))
        refused = [str(i) for i in ids if i not in signed]
        if refused:
            raise ValidationError({"slide_ids": f"Only signed slides are exported; not signed or unknown: "
                                                f"{', '.join(refused)}."})
    return SlideSelection(slide_ids=tuple(dict.fromkeys(ids)), start=start, end=end,
                          include_superseded=bool(include_superseded), include_names=bool(include_names),
                          include_accessions=bool(include_accessions))


def slides_for_export(*, selection: SlideSelection) -> QuerySet[Slide]:
    qs = Slide.objects.filter(status=Slide.Status.SIGNED, report__isnull=False)
    if selection.slide_ids:
        qs = qs.filter(pk__in=selection.slide_ids)
    if selection.start:
        qs = qs.filter(signed_at__date__gte=selection.start)
    if selection.end:
        qs = qs.filter(signed_at__date__lte=selection.end)
    if not selection.include_superseded:
        qs = qs.exclude(Exists(Slide.objects.filter(previous=OuterRef("pk"), status=Slide.Status.SIGNED)))
    return qs.select_related("signed_by").order_by("pk")


def slide_folder(slide: Slide) -> str:
    return f"slide-{slide.pk}-v{slide.version}"


def _person(user, include_names: bool) -> str | None:
    if user is None:
        return None
    return user.get_username() if include_names else reader_pseudonym(user.pk)


def _release_person(pk: int | None, name: str | None, selection: SlideSelection) -> str | None:
    """The submitter's or releaser's name in an export: a pseudonym unless names are included."""
    return name if selection.include_names or pk is None else reader_pseudonym(pk)


def coco_categories() -> list[dict]:
    """Every class of the taxonomy, ids from 1 in display order (the same ids in each slide's file)."""
    return [{"id": i, "name": c.code, "supercategory": "leukocyte" if c.is_leukocyte else "other",
             "display_name": c.name}
            for i, c in enumerate(CellClass.objects.order_by("display_order", "code"), start=1)]


def slide_coco(slide: Slide, *, selection: SlideSelection, categories: list[dict]) -> dict:
    """The slide's counted cells as a COCO detection dataset (a dict)."""
    category_of = {c["name"]: c["id"] for c in categories}
    cells = list(slide.cells.filter(status=SlideCell.Status.COUNTED, final_class__isnull=False)
                 .select_related("final_class", "image", "field__image", "changed_by").order_by("id"))
    images, annotations = [], []
    image_ids: dict[int, int] = {}

    def image_entry(stored, **extra) -> int:
        if stored.pk not in image_ids:
            image_ids[stored.pk] = len(images) + 1
            images.append({"id": image_ids[stored.pk], "file_name": f"{stored.sha256}.png", "width": stored.width,
                           "height": stored.height, "sha256": stored.sha256, **extra})
        return image_ids[stored.pk]

    if slide.kind == Slide.Kind.FIELDS:
        for f in slide.fields.select_related("image").order_by("position", "id"):
            image_entry(f.image, field_position=f.position,
                        microns_per_pixel=(f.scale or {}).get("microns_per_pixel"),
                        scale_source=(f.scale or {}).get("source"))
    for c in cells:
        if c.field_id is not None and c.x0 is not None:
            image_id = image_entry(c.field.image)
            x, y, w, h = c.x0, c.y0, c.x1 - c.x0, c.y1 - c.y0
        else:  # a cropped cell: the whole image is the cell
            image_id = image_entry(c.image)
            x, y, w, h = 0, 0, c.image.width, c.image.height
        annotations.append({
            "id": len(annotations) + 1, "image_id": image_id, "category_id": category_of[c.final_class.code],
            "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "segmentation": [],
            "attributes": {
                "final_class": c.final_class.code, "model_class": c.predicted_class or None,
                "model_top_class": c.top_class or None, "model_confidence": c.confidence,
                "model_agreement": c.agreement_text or None, "model_reasons": list(c.reasons or []),
                "ood_score": c.ood_score, "model_version": c.model_version_id,
                "verified_by": _person(c.changed_by, selection.include_names),
                "detector_kind": c.detector_kind or None, "detector_score": c.detector_score,
                "cell_sha256": c.image.sha256,
            },
        })
    info = {"description": f"LeukoPortal signed slide {slide_folder(slide)}", "version": str(slide.version),
            "year": slide.signed_at.year, "contributor": "LeukoPortal",
            "date_created": slide.signed_at.isoformat(), "slide": slide_folder(slide),
            "accession": slide.code if selection.include_accessions else None, "kind": slide.kind,
            "signed_by": _person(slide.signed_by, selection.include_names), "model_version": slide.model_version_id}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def slide_report_files(slide: Slide, *, selection: SlideSelection) -> tuple[bytes, bytes]:
    """The signed report's CSV and FHIR JSON, as the report pages give them, with the accession code
    and the signer's name replaced by the slide's folder and a pseudonym unless the export includes them."""
    accession = slide.code if selection.include_accessions else slide_folder(slide)
    named = report_with_names(slide.report, name_of=lambda pk, name: _release_person(pk, name, selection))
    rows = report_csv_rows(slide, report=named)
    for row in rows[1:]:
        row[0] = accession
    arguments = dict(lis_arguments(slide), accession=accession, report=named)
    report = fhir.diagnostic_report(issued=slide.signed_at.isoformat(),
                                    performer=_person(slide.signed_by, selection.include_names), **arguments)
    return csv_bytes(rows), json.dumps(report, indent=2).encode("utf-8")


def _index_row(slide: Slide, selection: SlideSelection, coco: dict) -> list:
    release = selectors.slide_report_release(slide=slide)
    return [slide_folder(slide), slide.code if selection.include_accessions else "", slide.version, release["status"],
            slide.kind, slide.signed_at.isoformat(), _person(slide.signed_by, selection.include_names),
            slide.fields.count(), len(coco["annotations"]), (slide.report or {}).get("leukocyte_total", ""),
            slide.model_version_id or ""]


def _stored_files(slide: Slide) -> list:
    if slide.kind == Slide.Kind.FIELDS:
        return [f.image for f in slide.fields.select_related("image")]
    return [c.image for c in slide.cells.filter(status=SlideCell.Status.COUNTED).select_related("image")]


def slides_export(*, selection: SlideSelection, actor, channel: str,
                  progress: Callable[[int, int], None] | None = None) -> ZipExport:
    """Prepare the export of the selected signed slides (every stored file found) and audit it; the
    archive is made slide by slide while ``chunks`` is read."""
    from zipstream import ZipStream

    slides = list(slides_for_export(selection=selection))
    held_back = exam_image_ids(actor)
    in_test = [slide_folder(s) for s in slides if held_back and s.cells.filter(image_id__in=held_back).exists()]
    if in_test:
        raise ValidationError(f"{', '.join(in_test)}: cells of a proficiency test open for you; export these slides "
                              "once you have submitted it.")
    for slide in slides:
        for stored in _stored_files(slide):
            if not default_storage.exists(stored.file.name):
                raise ValidationError(f"The stored image {stored.sha256} of slide {slide_folder(slide)} is missing.")
    categories = coco_categories()
    counts = {"slides": len(slides), "slide_ids": [s.pk for s in slides]}
    audit_record(actor=actor, action=AuditAction.SLIDES_EXPORT, target=("Export", "slides"),
                 after={"channel": channel, "selection": selection.as_dict(), **counts})
    zs = ZipStream()

    def batches() -> Iterator[None]:
        zs.add(SLIDES_EXPORT_README, README)
        zs.add(csv_bytes(classes_rows()), CLASSES)
        index = [INDEX_COLUMNS]
        yield None
        for i, slide in enumerate(slides):
            folder = slide_folder(slide)
            coco = slide_coco(slide, selection=selection, categories=categories)
            stored = {im.sha256: im.file.name for im in _stored_files(slide)}
            for image in coco["images"]:
                storage_entry(zs, stored[image["sha256"]], f"{folder}/images/{image['file_name']}")
            zs.add(json.dumps(coco, indent=1).encode("utf-8"), f"{folder}/{COCO}")
            report_csv, report_fhir = slide_report_files(slide, selection=selection)
            zs.add(report_csv, f"{folder}/report.csv")
            zs.add(report_fhir, f"{folder}/report.fhir.json")
            index.append(_index_row(slide, selection, coco))
            yield None
            if progress:
                progress(i + 1, len(slides))
        zs.add(csv_bytes(index), SLIDES_INDEX)
        yield None

    return ZipExport(filename=f"leukoportal-slides-{export_stamp()}.zip",
                     chunks=zip_stream_chunks(zs, batches=batches()), size=None, counts=counts)
