"""Reads for the report pages: evaluations, their tables (for pages and downloads), agreement over time."""
from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from classifier.models import ModelVersion, Prediction

from . import metrics
from .baselines import BASELINES
from .models import Evaluation, GateDecision

TABLES = ("summary", "per_class", "confusion", "abstention", "baselines", "cells", "history")


def evaluations_list() -> QuerySet[Evaluation]:
    return Evaluation.objects.select_related("model_version", "requested_by").order_by("-id")


def evaluation_latest(*, model_version: ModelVersion) -> Evaluation | None:
    return (Evaluation.objects.filter(model_version=model_version, status=Evaluation.Status.SUCCEEDED)
            .order_by("-id").first())


def gate_decision_latest(*, model_version: ModelVersion) -> GateDecision | None:
    return GateDecision.objects.filter(model_version=model_version).select_related("compared_with").first()


def model_versions_overview() -> list[dict]:
    """Every version with its latest succeeded evaluation and gate decision (for the index pages)."""
    versions = list(ModelVersion.objects.order_by("-id"))
    latest: dict[int, Evaluation] = {}
    for ev in Evaluation.objects.filter(status=Evaluation.Status.SUCCEEDED).order_by("id").defer("results", "snapshot"):
        latest[ev.model_version_id] = ev
    gates: dict[int, GateDecision] = {}
    for g in GateDecision.objects.order_by("id"):
        gates[g.model_version_id] = g
    return [{"version": v, "evaluation": latest.get(v.pk), "gate": gates.get(v.pk)} for v in versions]


# --- Tables --------------------------------------------------------------------------------
def model_names(evaluation: Evaluation) -> list[tuple[str, str]]:
    """(key, label) of every classifier in an evaluation: the vote, each backbone, each baseline."""
    r = evaluation.results or {}
    names = [("vote", "Ensemble (vote)")]
    names += [(b, b) for b in r.get("backbones", [])]
    names += _baseline_names(r)
    return names


def _baseline_names(results: dict) -> list[tuple[str, str]]:
    """Baselines in Table I's order (PostgreSQL's jsonb does not keep key order)."""
    stored = (results.get("baselines") or {}).get("models") or {}
    return [(k, BASELINES[k]) for k in BASELINES if k in stored] + [(k, k) for k in stored if k not in BASELINES]


def evaluation_summary_for(evaluation: Evaluation, model: str) -> dict | None:
    r = evaluation.results or {}
    if model == "vote":
        return r.get("vote")
    if model in r.get("per_backbone", {}):
        return r["per_backbone"][model]
    return ((r.get("baselines") or {}).get("models") or {}).get(model)


def _summary_row(key: str, label: str, s: dict) -> list:
    ci = s.get("overall_accuracy_ci") or [None, None]
    return [key, label, s.get("n"), s.get("overall_accuracy"), ci[0], ci[1], s.get("balanced_accuracy"),
            s.get("macro_f1"), s.get("kappa")]


SUMMARY_COLUMNS = ["model", "name", "cells", "overall_accuracy", "overall_accuracy_ci_low", "overall_accuracy_ci_high",
                   "balanced_accuracy", "macro_f1", "cohen_kappa"]
PER_CLASS_COLUMNS = ["class", "support", "tp", "fn", "fp", "tn", "accuracy", "sensitivity", "sensitivity_ci_low",
                     "sensitivity_ci_high", "specificity", "specificity_ci_low", "specificity_ci_high",
                     "misdiagnosis_rate"]


def per_class_rows(summary: dict) -> list[list]:
    rows = []
    per_class = summary.get("per_class", {})
    order = [c for c in summary.get("confusion_matrix", {}).get("labels", []) if c in per_class]
    for code in order + [c for c in per_class if c not in order]:
        c = per_class[code]
        sci = c.get("sensitivity_ci") or [None, None]
        spci = c.get("specificity_ci") or [None, None]
        rows.append([code, c["support"], c["tp"], c["fn"], c["fp"], c["tn"], c["accuracy"], c["sensitivity"], sci[0],
                     sci[1], c["specificity"], spci[0], spci[1], c["misdiagnosis_rate"]])
    return rows


def evaluation_table(evaluation: Evaluation, table: str, model: str = "vote") -> dict:
    """One table of an evaluation as {"title", "columns", "rows"}; KeyError for an unknown table or model."""
    r = evaluation.results or {}
    if table == "summary":
        rows = [_summary_row(k, label, evaluation_summary_for(evaluation, k)) for k, label in model_names(evaluation)
                if evaluation_summary_for(evaluation, k)]
        return {"title": "Overall figures per classifier", "columns": SUMMARY_COLUMNS, "rows": rows}
    if table == "baselines":
        keys = [("vote", "Ensemble (vote)")] + _baseline_names(r)
        rows = [_summary_row(k, label, evaluation_summary_for(evaluation, k)) for k, label in keys]
        return {"title": "Table I: the CNN ensemble against classical classifiers", "columns": SUMMARY_COLUMNS,
                "rows": rows}
    if table == "per_class":
        s = evaluation_summary_for(evaluation, model)
        if s is None:
            raise KeyError(model)
        return {"title": f"Per-class figures ({model})", "columns": PER_CLASS_COLUMNS, "rows": per_class_rows(s)}
    if table == "confusion":
        s = evaluation_summary_for(evaluation, model)
        if s is None:
            raise KeyError(model)
        t2 = metrics.table_ii(s["confusion_matrix"])
        rows = [[pred] + row for pred, row in zip(t2["labels"], t2["matrix"])]
        return {"title": f"Confusion matrix ({model}): rows predicted, columns actual",
                "columns": ["predicted \\ actual"] + t2["labels"], "rows": rows}
    if table == "abstention":
        curve = (r.get("abstention") or {}).get("curve", [])
        return {"title": "Abstention trade-off", "columns": ["threshold", "accuracy_on_accepted", "referred_share",
                                                             "accepted"],
                "rows": [[c["threshold"], c["accuracy_accepted"], c["referred"], c["accepted"]] for c in curve]}
    if table == "cells":
        backbones = r.get("backbones", [])
        return {"title": "Every held-out cell", "columns": ["image_id", "actual", "vote", "label_after_abstention",
                                                             "confidence", "agreement"] + backbones,
                "rows": [c[:6] + [c[6].get(b) for b in backbones] for c in r.get("cells", [])]}
    if table == "history":
        return history_table(evaluation.model_version)
    raise KeyError(table)


def history_table(version: ModelVersion) -> dict:
    cols = ["backbone", "epoch", "loss", "val_loss", "val_accuracy"]
    return {"title": f"Training curves of v{version.pk}", "columns": cols,
            "rows": [[h.get(c) for c in cols] for h in (version.history or [])]}


def confusion_table_ii(evaluation: Evaluation, model: str = "vote") -> dict | None:
    """Table II layout plus ``rows_with_labels`` [(predicted class, counts, diagonal index)] for templates."""
    s = evaluation_summary_for(evaluation, model)
    if not s:
        return None
    t2 = metrics.table_ii(s["confusion_matrix"])
    t2["rows_with_labels"] = [(label, row, i) for i, (label, row) in enumerate(zip(t2["labels"], t2["matrix"]))]
    return t2


# --- Agreement over time ------------------------------------------------------------------
def _slide_ledger():
    """The slides app's per-cell ledger (model class vs expert's final class), if that app has one."""
    try:
        from slides.models import SlideCell
    except ImportError:
        return None
    needed = {"top_class", "final_class", "model_version", "slide"}
    return SlideCell if needed <= {f.name for f in SlideCell._meta.get_fields()} else None


def agreement_over_time(*, weeks: int = 26, model_version_id: int | None = None, source: str | None = None) -> dict:
    """The model's reading of each cell against the expert's final class, per class by week and per
    class by model version. Uploaded cells: Prediction vs CellImage.final_label (week of the
    prediction). Cells found in slides: the slides app's ledger (SlideCell.top_class vs
    final_class, week of the slide), when that app is installed."""
    since = timezone.now() - timedelta(weeks=weeks)
    slide_cell = _slide_ledger()
    parts = []
    if source in (None, "cell", "field") or (source == "slide_cell" and slide_cell is None):
        qs = Prediction.objects.filter(image__final_label__isnull=False, image__final_label__is_abstain=False,
                                       created_at__gte=since)
        if slide_cell is not None:
            qs = qs.exclude(image__source="slide_cell")  # counted from the slides ledger below
        if model_version_id:
            qs = qs.filter(model_version_id=model_version_id)
        if source:
            qs = qs.filter(image__source=source)
        parts.append((qs, "created_at", "image__final_label__code", Q(abstained=True)))
    if slide_cell is not None and source in (None, "slide_cell"):
        qs = slide_cell.objects.filter(final_class__isnull=False, final_class__is_abstain=False,
                                       model_version__isnull=False, slide__created_at__gte=since).exclude(top_class="")
        if model_version_id:
            qs = qs.filter(model_version_id=model_version_id)
        parts.append((qs, "slide__created_at", "final_class__code", Q(predicted_class="unidentified")))
    by_week: dict = {}
    by_version: dict = {}
    for qs, when, truth, referred_q in parts:
        agree = Count("id", filter=Q(top_class=F(truth)))
        referred = Count("id", filter=referred_q)
        for r in (qs.annotate(week=TruncWeek(when)).values("week", code=F(truth))
                  .annotate(n=Count("id"), agree=agree, referred=referred)):
            _add(by_week, (r["week"], r["code"]), r)
        for r in (qs.values("model_version_id", code=F(truth))
                  .annotate(n=Count("id"), agree=agree, referred=referred)):
            _add(by_version, (r["model_version_id"], r["code"]), r)
    return {
        "by_week": _pivot([dict(v, week=k[0], code=k[1]) for k, v in by_week.items()], "week"),
        "by_version": _pivot([dict(v, model_version_id=k[0], code=k[1]) for k, v in by_version.items()],
                             "model_version_id"),
    }


def _add(acc: dict, key: tuple, row: dict) -> None:
    cur = acc.setdefault(key, {"n": 0, "agree": 0, "referred": 0})
    for k in ("n", "agree", "referred"):
        cur[k] += row[k]


def _pivot(rows: list[dict], key: str) -> dict:
    keys = sorted({r[key] for r in rows})
    classes = sorted({r["code"] for r in rows})
    cells = {(r[key], r["code"]): r for r in rows}
    out_rows = []
    for k in keys:
        total_n = sum(cells[(k, c)]["n"] for c in classes if (k, c) in cells)
        total_a = sum(cells[(k, c)]["agree"] for c in classes if (k, c) in cells)
        out_rows.append({
            "key": k,
            "cells": [_rate(cells.get((k, c))) for c in classes],
            "overall": {"n": total_n, "agree": total_a, "rate": total_a / total_n if total_n else None},
        })
    return {"classes": classes, "rows": out_rows}


def _rate(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {"n": r["n"], "agree": r["agree"], "referred": r["referred"], "rate": r["agree"] / r["n"] if r["n"] else None,
            "ci": metrics.wilson(r["agree"], r["n"])}
