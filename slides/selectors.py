"""Reads for slides: lists, cells grouped by class, the differential with its flags."""
from __future__ import annotations

from collections import Counter

from django.db.models import Count, Q, QuerySet

from annotations.models import CellClass

from . import stats
from .models import ReferenceInterval, Slide, SlideCell


def slides_list(*, status: str | None = None, code: str | None = None) -> QuerySet[Slide]:
    qs = Slide.objects.select_related("created_by", "signed_by").annotate(n_cells=Count("cells"))
    if status:
        qs = qs.filter(status=status)
    if code:
        qs = qs.filter(code__icontains=code)
    return qs.order_by("-id")


def slide_cells(*, slide: Slide) -> QuerySet[SlideCell]:
    return slide.cells.select_related("final_class", "field", "image").order_by("id")


def slide_unresolved_count(*, slide: Slide) -> int:
    return slide.cells.filter(status=SlideCell.Status.COUNTED).filter(
        Q(final_class__isnull=True) | Q(final_class__is_abstain=True)
    ).count()


def reference_rules() -> list[dict]:
    return [
        {"name": r.name, "codes": r.code_list, "measure": r.measure, "low": r.low, "high": r.high,
         "flag_low": r.flag_low, "flag_high": r.flag_high}
        for r in ReferenceInterval.objects.filter(active=True).order_by("display_order", "id")
    ]


def slide_differential(*, slide: Slide, method: str = stats.DEFAULT_METHOD, signing: bool = False) -> dict:
    """Everything the screens and reports show, as JSON-able data. ``signing``: the expert is signing
    now, which verifies every cell."""
    classes = list(CellClass.objects.all().order_by("display_order", "code"))
    by_code = {c.code: c for c in classes}
    leuko = [c.code for c in classes if c.is_leukocyte]
    counted = Counter(
        slide.cells.filter(status=SlideCell.Status.COUNTED, final_class__isnull=False)
        .values_list("final_class__code", flat=True)
    )
    wbc = float(slide.wbc_count) if slide.wbc_count is not None else None
    report_codes = [c.code for c in classes if c.is_leukocyte and c.active] + ["erythroblast"]
    diff = stats.differential(counted, leukocyte_codes=leuko, report_codes=report_codes, wbc_count=wbc, method=method)
    thresholds = {k: v for k, v in stats.CLINICAL_THRESHOLDS.items() if k in by_code}
    rows = []
    for c in classes:
        n = diff.counts.get(c.code, 0)
        if not (c.active or n):
            continue
        row = {"code": c.code, "name": c.name, "hotkey": c.hotkey, "count": n, "is_leukocyte": c.is_leukocyte,
               "is_abstain": c.is_abstain}
        if c.code in diff.percentages:
            row.update(percent=diff.percentages[c.code], interval=diff.intervals[c.code],
                       absolute=diff.absolute.get(c.code))
        elif c.code in diff.per_100_wbc:
            row.update(per_100_wbc=diff.per_100_wbc[c.code], interval=diff.per_100_intervals[c.code])
        rows.append(row)
    neut = [c for c in ("neutrophil_segmented", "neutrophil_band") if c in by_code]
    neutrophils = None
    if neut and diff.leukocyte_total:
        k = sum(diff.counts.get(c, 0) for c in neut)
        n = diff.leukocyte_total
        neutrophils = {"count": k, "percent": round(100 * k / n, 2),
                       "interval": list(stats.proportion_interval(k, n, method=method)),
                       "absolute": round(wbc * k / n, 3) if wbc is not None else None}
    cells = slide.cells.all()
    # only cells a person verified: before that a cell's final class is the model's own call
    with_pred = cells.exclude(predicted_class="").exclude(predicted_class="unidentified").filter(final_class__isnull=False)
    if not signing:
        with_pred = with_pred.filter(SlideCell.verified_q())
    agree = sum(1 for p, f in with_pred.values_list("predicted_class", "final_class__code") if p == f)
    pre_classified = cells.exclude(predicted_class="").exclude(predicted_class="unidentified").count()
    data = diff.as_dict()
    data.update(
        rows=rows,
        neutrophils=neutrophils,
        target=slide.target_count,
        target_message=stats.target_message(diff.leukocyte_total, slide.target_count),
        count_further=stats.count_further(diff, thresholds=thresholds),
        flags=stats.evaluate_flags(diff, reference_rules()),
        cells_total=cells.count(),
        not_counted=cells.filter(status=SlideCell.Status.NOT_COUNTED).count(),
        unresolved=slide_unresolved_count(slide=slide),
        model_agreement={"agreed": agree, "total": with_pred.count(), "pre_classified": pre_classified},
        interval_method="Wilson score" if method == "wilson" else "Clopper-Pearson",
    )
    return data


def slide_groups(*, slide: Slide) -> list[dict]:
    """Cells grouped by final class (the analysers' verification screen); not counted last."""
    classes = list(CellClass.objects.filter(active=True).order_by("-is_abstain", "display_order", "code"))
    groups = {c.code: {"code": c.code, "name": c.name, "hotkey": c.hotkey, "is_abstain": c.is_abstain,
                       "cells": []} for c in classes}
    not_counted = {"code": "not_counted", "name": "Not counted", "hotkey": "", "is_abstain": False, "cells": []}
    for cell in slide_cells(slide=slide):
        if cell.status == SlideCell.Status.NOT_COUNTED:
            not_counted["cells"].append(cell)
            continue
        code = cell.final_class.code if cell.final_class else "unidentified"
        if code not in groups:
            groups[code] = {"code": code, "name": cell.final_class.name if cell.final_class else code,
                            "hotkey": "", "is_abstain": False, "cells": []}
        groups[code]["cells"].append(cell)
    return list(groups.values()) + [not_counted]


def slide_versions(*, slide: Slide) -> list[Slide]:
    return list(Slide.objects.filter(code=slide.code).order_by("version"))
