"""Reads for the report pages: evaluations, their tables (for pages and downloads), agreement over time."""
from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.db.models import Count, F, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import TruncWeek
from django.utils import timezone

from annotations.models import CellImage, LabSettings, Split
from classifier.ml.reasons import OUT_OF_DISTRIBUTION
from classifier.models import ModelVersion, Prediction
from classifier.selectors import model_version_switch_label, threshold_applied
from slides.models import SlideCell

from . import metrics
from .baselines import BASELINES
from .models import Evaluation, GateDecision

TABLES = ("summary", "per_class", "confusion", "abstention", "baselines", "cells", "history")


def evaluations_list() -> QuerySet[Evaluation]:
    return Evaluation.objects.select_related("model_version", "requested_by").order_by("-id")


def evaluations_summary_list(*, model_version_id: int | None = None) -> QuerySet[Evaluation]:
    """Evaluations, newest first, without their bulky results and snapshot; each carries its vote's
    overall accuracy as ``vote_overall_accuracy`` (read in the query, not by loading the results)."""
    qs = (Evaluation.objects.defer("results", "snapshot")
          .annotate(vote_overall_accuracy=KeyTransform("overall_accuracy", KeyTransform("vote", "results")))
          .order_by("-id"))
    return qs if model_version_id is None else qs.filter(model_version_id=model_version_id)


def heldout_labelled_count() -> int:
    """Held-out cells an evaluation would score now (what ``services.heldout_snapshot`` freezes)."""
    return (CellImage.objects.filter(split=Split.HELDOUT, final_label__isnull=False, final_label__is_abstain=False)
            .exclude(source="field").count())


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
    active = next((v for v in versions if v.status == ModelVersion.Status.ACTIVE), None)
    lab = LabSettings.get()
    return [{"version": v, "evaluation": latest.get(v.pk), "gate": gates.get(v.pk),
             "threshold": threshold_applied(v, lab=lab),
             "switch_label": model_version_switch_label(version=v, active=active)} for v in versions]


def paired_comparison_of(new: Evaluation, old: Evaluation) -> dict:
    """The two versions' votes compared cell by cell on the held-out cells both evaluations scored
    (:func:`metrics.paired_comparison`), with the version ids; empty when they share no cell."""
    new_cells = {c[0]: c for c in (new.results or {}).get("cells", [])}
    old_cells = {c[0]: c for c in (old.results or {}).get("cells", [])}
    ids = [i for i in new_cells if i in old_cells and new_cells[i][1] == old_cells[i][1]]
    if not ids:
        return {}
    out = metrics.paired_comparison([new_cells[i][1] for i in ids], [new_cells[i][2] for i in ids],
                                    [old_cells[i][2] for i in ids])
    out.update(new_version=new.model_version_id, old_version=old.model_version_id,
               same_snapshot=new.snapshot_hash == old.snapshot_hash)
    return out


def vote_worse_than_backbones(evaluation: Evaluation) -> list[dict]:
    """The ensemble's own backbones that are more accurate than its vote on these held-out cells,
    best first (the report says so at the top)."""
    r = evaluation.results or {}
    vote = (r.get("vote") or {}).get("overall_accuracy")
    if vote is None:
        return []
    better = [{"backbone": b, "accuracy": s.get("overall_accuracy"), "ci": s.get("overall_accuracy_ci")}
              for b, s in (r.get("per_backbone") or {}).items()
              if s.get("overall_accuracy") is not None and s["overall_accuracy"] > vote + 1e-9]
    return sorted(better, key=lambda x: -x["accuracy"])


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
def training_image_ids(version_ids) -> dict[int, list[int]]:
    """The images each model version trained on (the ids frozen in its training snapshot)."""
    return {pk: [row[0] for row in (snapshot or {}).get("items", [])]
            for pk, snapshot in ModelVersion.objects.filter(pk__in=list(version_ids)).values_list("pk", "snapshot")}


_ID_CHUNK = 5000  # ids per IN list (SQLite limits the number of query parameters)


def agreement_over_time(*, weeks: int = 26, model_version_id: int | None = None, source: str | None = None) -> dict:
    """The model's reading of each cell against the expert's final class, per class by week and per
    class by model version, on cells the version never trained on: held-out cells and cells whose
    label came after its training snapshot (a version agrees with its own training labels by
    construction). The cells a version trained on are counted apart (``trained_by_version``).

    Uploaded cells: Prediction vs CellImage.final_label (week of the prediction). Cells found in
    slides: the slides app's ledger (SlideCell.top_class vs final_class, week of the slide), counting
    only cells a person verified (the final class of an unverified cell is the model's own call)."""
    since = timezone.now() - timedelta(weeks=weeks)
    parts = []
    if source in (None, "cell", "field"):
        qs = Prediction.objects.filter(image__final_label__isnull=False, image__final_label__is_abstain=False,
                                       created_at__gte=since)
        qs = qs.exclude(image__source="slide_cell")  # counted from the slides ledger below
        if model_version_id:
            qs = qs.filter(model_version_id=model_version_id)
        if source:
            qs = qs.filter(image__source=source)
        parts.append((qs, "created_at", "image__final_label__code", Q(abstained=True), "image_id"))
    if source in (None, "slide_cell"):
        qs = SlideCell.objects.filter(final_class__isnull=False, final_class__is_abstain=False,
                                      model_version__isnull=False, slide__created_at__gte=since).exclude(top_class="")
        qs = qs.filter(SlideCell.verified_q())
        if model_version_id:
            qs = qs.filter(model_version_id=model_version_id)
        parts.append((qs, "slide__created_at", "final_class__code", Q(predicted_class="unidentified"), "image_id"))
    by_week: dict = {}
    by_version: dict = {}
    trained: dict = {}
    for qs, when, truth, referred_q, image in parts:
        agree = Count("id", filter=Q(top_class=F(truth)))
        referred = Count("id", filter=referred_q)
        for r in (qs.annotate(week=TruncWeek(when)).values("week", code=F(truth))
                  .annotate(n=Count("id"), agree=agree, referred=referred)):
            _add(by_week, (r["week"], r["code"]), r)
        for r in (qs.values("model_version_id", code=F(truth))
                  .annotate(n=Count("id"), agree=agree, referred=referred)):
            _add(by_version, (r["model_version_id"], r["code"]), r)
        # take out what each version read on its own training cells
        versions = {k[0] for k in by_version}
        for version_id, ids in training_image_ids(versions).items():
            for start in range(0, len(ids), _ID_CHUNK):
                own = qs.filter(model_version_id=version_id, **{f"{image}__in": ids[start:start + _ID_CHUNK]})
                for r in (own.annotate(week=TruncWeek(when)).values("week", code=F(truth))
                          .annotate(n=Count("id"), agree=agree, referred=referred)):
                    _add(by_week, (r["week"], r["code"]), r, sign=-1)
                for r in own.values(code=F(truth)).annotate(n=Count("id"), agree=agree, referred=referred):
                    _add(by_version, (version_id, r["code"]), r, sign=-1)
                    _add(trained, (version_id, r["code"]), r)
    return {
        "by_week": _pivot([dict(v, week=k[0], code=k[1]) for k, v in by_week.items() if v["n"]], "week"),
        "by_version": _pivot([dict(v, model_version_id=k[0], code=k[1]) for k, v in by_version.items() if v["n"]],
                             "model_version_id"),
        "trained_by_version": _pivot([dict(v, model_version_id=k[0], code=k[1]) for k, v in trained.items()],
                                     "model_version_id"),
    }


def ood_share_over_time(*, weeks: int = 26, model_version_id: int | None = None, source: str | None = None) -> dict:
    """The share of cells each model version found unlike its training images (flagged
    out-of-distribution), by week and by version: drift made visible. Every classified cell
    counts, labelled or not; a version without the score (trained before it existed) is left out
    and named in ``unchecked_versions``. ``expected``: the share the version flags on in-domain
    cells (measured on its validation cells)."""
    since = timezone.now() - timedelta(weeks=weeks)
    qs = Prediction.objects.filter(created_at__gte=since)
    if model_version_id:
        qs = qs.filter(model_version_id=model_version_id)
    if source:
        qs = qs.filter(image__source=source)
    unchecked = sorted(set(qs.filter(ood_score__isnull=True).values_list("model_version_id", flat=True)))
    scored = qs.filter(ood_score__isnull=False)
    flagged = Count("id", filter=Q(reasons__contains=[OUT_OF_DISTRIBUTION]))
    if connection.vendor != "postgresql":  # JSON containment is PostgreSQL's; elsewhere match the text
        flagged = Count("id", filter=Q(reasons__icontains=OUT_OF_DISTRIBUTION))

    def row(key, n, k, expected=None):
        return {"key": key, "n": n, "ood": k, "share": k / n if n else None, "ci": metrics.wilson(k, n),
                "expected": expected}

    by_week = [row(r["week"], r["n"], r["ood"]) for r in
               scored.annotate(week=TruncWeek("created_at")).values("week").annotate(n=Count("id"), ood=flagged)
               .order_by("week")]
    expected = {pk: ((m or {}).get("ood") or {}).get("expected_rate")
                for pk, m in ModelVersion.objects.filter(pk__in=scored.values("model_version_id")).values_list("pk", "metrics")}
    by_version = [row(r["model_version_id"], r["n"], r["ood"], expected.get(r["model_version_id"])) for r in
                  scored.values("model_version_id").annotate(n=Count("id"), ood=flagged).order_by("model_version_id")]
    return {"by_week": by_week, "by_version": by_version, "unchecked_versions": unchecked}


def _add(acc: dict, key: tuple, row: dict, sign: int = 1) -> None:
    cur = acc.setdefault(key, {"n": 0, "agree": 0, "referred": 0})
    for k in ("n", "agree", "referred"):
        cur[k] += sign * row[k]


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
