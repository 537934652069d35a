"""Reads for slides: lists, cells grouped by class, the differential with its flags."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from annotations.models import CellClass, LabSettings
from classifier.ml.reasons import BATCH_UNLIKE, OUT_OF_DISTRIBUTION

from . import lis, stats
from .models import ReferenceInterval, Slide, SlideCell
from .morphology.selectors import slide_red_cells_section
from .platelets.selectors import slide_platelets


def slides_list(*, status: str | None = None, code: str | None = None) -> QuerySet[Slide]:
    qs = Slide.objects.select_related("created_by", "signed_by", "submitted_by", "next_version",
                                      "acquisition_source").annotate(n_cells=Count("cells"))
    if status:
        qs = qs.filter(status=status)
    if code:
        qs = qs.filter(code__icontains=code)
    return qs.order_by("-id")


def slide_cells(*, slide: Slide) -> QuerySet[SlideCell]:
    return slide.cells.select_related("final_class", "field", "image", "changed_by").order_by("id")


@dataclass(frozen=True)
class BlindCells:
    """What the lab's blind rule hides of a slide's cells from one viewer, as cell ids: ``call``, the
    model's call (class, confidence, backbones' agreement, referral reasons, out-of-distribution
    score); ``final_class``, the cell's class on the slide (the model's call until an expert verifies
    it, an expert's reading after)."""

    call: frozenset[int] = frozenset()
    final_class: frozenset[int] = frozenset()


def slide_cells_blind(*, cells: Iterable[SlideCell], user) -> BlindCells:
    """The slide cells whose model call, and whose class, this viewer may not see: the labelling
    portal's blind rule on each cell's image (``LabSettings.hides_model_call`` and
    ``hides_other_readings``), so that a held-out cell uploaded again in a slide shows a slide's
    reader no more than the labelling portal would. ``cells`` with their images loaded."""
    lab = LabSettings.get()
    call, final = set(), set()
    for cell in cells:
        if lab.hides_model_call(image=cell.image, user=user):
            call.add(cell.pk)
            if not cell.verified or lab.hides_other_readings(image=cell.image, user=user):
                final.add(cell.pk)
    return BlindCells(call=frozenset(call), final_class=frozenset(final))


def slide_totals_withheld(*, slide: Slide, user) -> str:
    """Why the slide's differential is withheld from this viewer ("" when it is not): some of its
    counted, classified cells are cells whose class they may not see (:func:`slide_cells_blind`: a
    blind held-out cell, a cell of a proficiency test open for them), and the totals would tell their
    classes (a one-cell slide's totals are its class; any slide's totals less the visible cells' are
    the hidden ones'). The slide page, the API and the signed report's formats ask this."""
    # a cell waiting as unidentified tells nothing: it is counted under no class
    cells = list(slide.cells.filter(status=SlideCell.Status.COUNTED, final_class__isnull=False,
                                    final_class__is_abstain=False).select_related("image"))
    n = len(slide_cells_blind(cells=cells, user=user).final_class)
    if not n:
        return ""
    return (f"The differential is withheld from you: {n} of its counted cells {'is' if n == 1 else 'are'} hidden "
            "from you (a blind held-out cell, or a cell of your open proficiency test), and its totals would tell "
            f"{'its class' if n == 1 else 'their classes'}.")


def slide_unresolved_count(*, slide: Slide) -> int:
    return slide.cells.filter(status=SlideCell.Status.COUNTED).filter(
        Q(final_class__isnull=True) | Q(final_class__is_abstain=True)
    ).count()


def reference_rules() -> list[dict]:
    return [
        {"name": r.name, "codes": r.code_list, "measure": r.measure, "low": r.low, "high": r.high,
         "flag_low": r.flag_low, "flag_high": r.flag_high}
        for r in ReferenceInterval.objects.filter(active=True).exclude(measure=ReferenceInterval.Measure.PLATELETS)
        .order_by("display_order", "id")
    ]


PER_100_CODES = ("erythroblast",)  # non-leukocytes reported per 100 WBC


DOMAIN_ALPHA = 0.01  # one-sided binomial test: the share of out-of-distribution cells is clearly too high
DOMAIN_MESSAGE = ("These images are unlike the images the model was trained on — every cell needs verification.")


def slide_domain_check(*, slide: Slide) -> dict:
    """Are this slide's images unlike the model's training images?

    The model flags about ``expected`` of in-domain cells out-of-distribution (measured on its
    validation cells; at least the share its threshold was set to leave out). When the slide's
    share is clearly above that — a one-sided binomial test at ``DOMAIN_ALPHA``, not a fixed
    guess — the slide is ``unlike`` the training images: every page and report says so, and no
    automatic flag is raised until every counted cell has been verified by an expert."""
    version = slide.model_version
    ood = (version.metrics or {}).get("ood") if version is not None else None
    cells = slide.cells.filter(model_version=version) if version is not None else slide.cells.none()
    scored = [(r, v) for r, v in cells.exclude(ood_score__isnull=True).values_list("reasons", "changed_by_id")]
    out = {"checked": bool(ood) and bool(scored), "classified": len(scored), "ood": 0, "share": None,
           "expected": None, "p_value": None, "unlike": False, "message": ""}
    if not out["checked"]:
        if version is not None and not ood:
            out["message"] = (f"Model v{version.pk} has no out-of-distribution check (trained before it existed): "
                              "retrain it to have images unlike its training images flagged.")
        return out
    from scipy.stats import binomtest

    # unlike the training images one by one, or as part of a batch unlike them as a whole (a blur,
    # another camera scale: classifier.ml.ood.OODCheck.batch_unlike)
    alone = sum(OUT_OF_DISTRIBUTION in (r or []) for r, _ in scored)
    k = sum(bool({OUT_OF_DISTRIBUTION, BATCH_UNLIKE} & set(r or [])) for r, _ in scored)
    n = len(scored)
    expected = max(float(ood.get("expected_rate") or 0.0), 1 - float(ood.get("quantile", 97.5)) / 100)
    p_value = float(binomtest(k, n, expected, alternative="greater").pvalue)
    out.update(ood=k, share=round(k / n, 4), expected=round(expected, 4), p_value=p_value,
               unlike=p_value < DOMAIN_ALPHA, **slide_unverified_counts(slide=slide))
    if out["unlike"]:
        out["message"] = (f"{DOMAIN_MESSAGE} {k} of {n} cells were unlike the training images "
                          f"({100 * k / n:.0f} %; about {100 * expected:.1f} % expected)"
                          + (f"; {k - alone} of them only as part of a batch unlike them as a whole." if k > alone
                             else "."))
    return out


def slide_unverified_cells(*, slide: Slide) -> QuerySet[SlideCell]:
    """Counted cells no expert has decided on yet (neither confirmed, reclassified nor marked):
    the one definition of "unverified" behind the withheld flags and the classes not assessed."""
    return slide.cells.filter(status=SlideCell.Status.COUNTED, changed_by__isnull=True)


def slide_unverified_counts(*, slide: Slide) -> dict:
    """``unverified``: counted cells waiting for an expert's verification; ``unverified_leukocytes``:
    those of them already among the leukocytes counted, on the model's class alone (the others are
    unidentified or of a class that is not a leukocyte, so not among the leukocytes counted)."""
    cells = slide_unverified_cells(slide=slide)
    return {"unverified": cells.count(),
            "unverified_leukocytes": cells.filter(final_class__is_leukocyte=True, final_class__is_abstain=False).count()}


def slide_flags_suppressed_reason(*, slide: Slide, domain: dict | None = None) -> str | None:
    """Why no automatic flag may be raised on this slide for now, or None: the one place for
    reasons that hold back every reference-interval flag until an expert has dealt with them.
    Today: images unlike the training images, until every counted cell is verified."""
    domain = domain if domain is not None else slide_domain_check(slide=slide)
    if domain["unlike"] and domain.get("unverified"):
        counts = {"unverified": domain["unverified"], "unverified_leukocytes": domain.get("unverified_leukocytes", 0)}
        return f"the images are unlike the images the model was trained on, and {stats.unverified_message(**counts)}"
    return None


def _model_blind_codes(*, slide: Slide, classes) -> set[str]:
    """Classes of the differential the slide's model version has no training data for: the model
    can never propose them, so only an expert assigns them. Without a model version every cell
    was classified by an expert and no class is singled out."""
    version = slide.model_version
    if version is None:
        return set()
    known = set(version.classes or [])
    return {c.code for c in classes
            if (c.is_leukocyte or c.code in PER_100_CODES) and not c.is_abstain and c.code not in known}


def _every_counted_cell_verified(*, slide: Slide) -> bool:
    counted = slide.cells.filter(status=SlideCell.Status.COUNTED)
    return counted.exists() and not slide_unverified_cells(slide=slide).exists()


def slide_not_assessed_codes(*, slide: Slide, classes) -> set[str]:
    """Classes the slide's model version cannot propose, while some counted cell is not verified:
    a cell the model left in another class could be one of them, so their count is no result
    ("not assessed by the model — expert only"). Once an expert has verified every counted cell,
    none (see :func:`slide_expert_counted_codes`)."""
    if _every_counted_cell_verified(slide=slide):
        return set()
    return _model_blind_codes(slide=slide, classes=classes)


def slide_expert_counted_codes(*, slide: Slide, classes) -> set[str]:
    """Classes the slide's model version cannot propose, once an expert has verified every counted
    cell: their count (0 included) is the expert's, a result with its interval like any other
    ("counted by the expert; not pre-classified by the model")."""
    if not _every_counted_cell_verified(slide=slide):
        return set()
    return _model_blind_codes(slide=slide, classes=classes)


def slide_differential(*, slide: Slide, method: str = stats.DEFAULT_METHOD, signing: bool = False) -> dict:
    """Everything the screens and reports show, as JSON-able data. ``signing``: the expert is signing
    now, which verifies every cell."""
    classes = list(CellClass.objects.all().order_by("display_order", "code"))
    by_code = {c.code: c for c in classes}
    leuko = [c.code for c in classes if c.is_leukocyte]
    cells = slide.cells.all()
    counted = Counter(
        cells.filter(status=SlideCell.Status.COUNTED, final_class__isnull=False)
        .values_list("final_class__code", flat=True)
    )
    wbc = float(slide.wbc_count) if slide.wbc_count is not None else None
    report_codes = [c.code for c in classes if c.is_leukocyte and c.active] + list(PER_100_CODES)
    diff = stats.differential(counted, leukocyte_codes=leuko, report_codes=report_codes, wbc_count=wbc, method=method)
    not_assessed = slide_not_assessed_codes(slide=slide, classes=classes)
    expert_counted = slide_expert_counted_codes(slide=slide, classes=classes)
    domain = slide_domain_check(slide=slide)
    suppressed = slide_flags_suppressed_reason(slide=slide, domain=domain)
    thresholds = {k: v for k, v in stats.CLINICAL_THRESHOLDS.items() if k in by_code}
    rows = []
    for c in classes:
        n = diff.counts.get(c.code, 0)
        if not (c.active or n):
            continue
        row = {"code": c.code, "name": c.name, "hotkey": c.hotkey, "count": n, "is_leukocyte": c.is_leukocyte,
               "is_abstain": c.is_abstain, "not_assessed": c.code in not_assessed,
               "expert_counted": c.code in expert_counted,
               "note": stats.NOT_ASSESSED_NOTE if c.code in not_assessed
               else stats.EXPERT_COUNTED_NOTE if c.code in expert_counted else ""}
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
    # only cells a person verified: before that a cell's final class is the model's own call
    with_pred = cells.exclude(predicted_class="").exclude(predicted_class="unidentified").filter(final_class__isnull=False)
    if not signing:
        with_pred = with_pred.filter(SlideCell.verified_q())
    agree = sum(1 for p, f in with_pred.values_list("predicted_class", "final_class__code") if p == f)
    flags = stats.evaluate_flags(diff, reference_rules(), target=slide.target_count,
                                 flags_suppressed_reason=suppressed, not_assessed=not_assessed,
                                 expert_counted=expert_counted)
    pre_classified = cells.exclude(predicted_class="").exclude(predicted_class="unidentified").count()
    # the platelet estimate (only when the lab reports it): its flag by the same rules, in the same summary
    platelet_data = slide_platelets(slide=slide, flags_suppressed_reason=suppressed,
                                    insufficient=stats.insufficient_message(diff.leukocyte_total, slide.target_count))
    platelet_rows = [platelet_data["reference"]] if platelet_data is not None else []
    data = diff.as_dict()
    data.update(
        rows=rows,
        neutrophils=neutrophils,
        target=slide.target_count,
        target_message=stats.target_message(diff.leukocyte_total, slide.target_count),
        count_further=stats.count_further(diff, thresholds=thresholds),
        flags=flags,
        flag_summary=stats.flag_summary([*flags, *platelet_rows], counted=diff.leukocyte_total,
                                        target=slide.target_count, flags_suppressed_reason=suppressed),
        not_assessed=sorted(not_assessed),
        expert_counted=sorted(expert_counted),
        cells_total=cells.count(),
        not_counted=cells.filter(status=SlideCell.Status.NOT_COUNTED).count(),
        unresolved=slide_unresolved_count(slide=slide),
        model_agreement={"agreed": agree, "total": with_pred.count(), "pre_classified": pre_classified},
        domain=domain,
        verified=cells.filter(changed_by__isnull=False).count(),
        interval_method="Wilson score" if method == "wilson" else "Clopper-Pearson",
    )
    if signing:  # the reviewer's red-cell grades, frozen with the differential (slides.morphology)
        data["red_cell_morphology"] = slide_red_cells_section(slide=slide)
    if platelet_data is not None:
        data["platelets"] = platelet_data
    data["sign_warnings"] = slide_sign_warnings(slide=slide, diff=data)
    return data


def slide_sign_warnings(*, slide: Slide, diff: dict | None = None) -> list[str]:
    """The reasons a signature on this slide needs a written justification: the page's
    confirmation step, the API's required ``reason`` and the sign service all ask this one place.
    Empty when the slide can be signed without one."""
    if diff is None:
        diff = slide_differential(slide=slide)
    warnings = []
    if diff["leukocyte_total"] < slide.target_count:
        warnings.append(f"Insufficient count: {diff['leukocyte_total']} of the target {slide.target_count} "
                        "leukocytes counted.")
    suppressed = (diff.get("flag_summary") or {}).get("suppressed_reason")
    if suppressed:
        warnings.append(f"Automatic flags are withheld: {suppressed}")
    return warnings


def slide_method_text(*, slide: Slide) -> str:
    """The report's method line, for fields and for cropped cells alike."""
    model = f"model v{slide.model_version_id}" if slide.model_version_id else "no model (every cell classified by an expert)"
    if slide.kind == Slide.Kind.CELLS:
        n = slide.cells.count()
        where = f"{n} cropped cell image(s) uploaded"
    else:
        fields = list(slide.fields.values_list("scale", flat=True))
        where = f"white cells located in {len(fields)} field(s)"
        sources = {(f or {}).get("source") for f in fields}
        if slide.microns_per_pixel:
            where += f" at the slide's set scale of {slide.microns_per_pixel:g} µm/px"
        elif sources == {"red cells"}:
            where += ", each field's scale measured on its red cells"
        elif "default" in sources:
            where += ", the scale of some fields assumed (too few red cells to measure)"
    return f"Digital morphology: {where}, pre-classified by {model}, {slide_verification_text(slide=slide)}."


def slide_verification_text(*, slide: Slide) -> str:
    """How many of the counted cells an expert verified, in the words of the method line: "every
    cell verified by an expert" only where that is so (a slide may be signed with cells the expert
    left on the model's call)."""
    counted = slide.cells.filter(status=SlideCell.Status.COUNTED).count()
    unverified = slide_unverified_cells(slide=slide).count()
    if not unverified:
        return "every cell verified by an expert"
    return (f"{counted - unverified} of {counted} counted cells verified by an expert, "
            f"{unverified} counted on the model's call alone")


def slide_groups(*, slide: Slide, blind: BlindCells = BlindCells(), cells: Iterable[SlideCell] | None = None
                 ) -> list[dict]:
    """Cells grouped by final class (the analysers' verification screen); not counted last. A counted
    cell whose class the viewer may not see (``blind.final_class``) waits with the unidentified ones:
    its group would show the hidden call. ``cells``: the slide's cells when the caller has them."""
    classes = list(CellClass.objects.filter(active=True).order_by("-is_abstain", "display_order", "code"))
    groups = {c.code: {"code": c.code, "name": c.name, "hotkey": c.hotkey, "is_abstain": c.is_abstain,
                       "cells": []} for c in classes}
    not_counted = {"code": "not_counted", "name": "Not counted", "hotkey": "", "is_abstain": False, "cells": []}
    abstain = next((c.code for c in classes if c.is_abstain), "unidentified")
    for cell in slide_cells(slide=slide) if cells is None else cells:
        if cell.status == SlideCell.Status.NOT_COUNTED:
            not_counted["cells"].append(cell)
            continue
        code = cell.final_class.code if cell.final_class and cell.pk not in blind.final_class else abstain
        if code not in groups:
            known = cell.final_class is not None and cell.final_class.code == code
            groups[code] = {"code": code, "name": cell.final_class.name if known else code,
                            "hotkey": "", "is_abstain": False, "cells": []}
        groups[code]["cells"].append(cell)
    for g in groups.values():
        g["unverified"] = sum(1 for c in g["cells"] if not c.verified)
    return list(groups.values()) + [not_counted]


def slide_report_release(*, slide: Slide) -> dict:
    """The release status of a signed version: "final", "corrected" (a later version), or
    "superseded" once a newer version is signed; ``successor`` is the next version (signed or
    still being corrected) or None."""
    successor = Slide.objects.filter(previous=slide).only("pk", "version", "status").first()  # never a stale cache
    superseded = successor is not None and successor.is_signed  # as Slide.superseded_by
    return {"status": lis.release_status(version=slide.version, superseded=superseded), "superseded": superseded,
            "successor": successor}


def slide_versions(*, slide: Slide) -> list[Slide]:
    return list(Slide.objects.filter(code=slide.code).order_by("version"))


def slide_report_refusal(*, slide: Slide) -> str | None:
    """Why this slide has no report (printable page, PDF, CSV, FHIR, HL7; browser and API alike), or
    None: reports exist only for signed slides."""
    if slide.status != Slide.Status.SIGNED or not slide.report:
        return "Reports exist only for signed slides: verify and sign this slide first."
    return None
