"""Report pages for reviewers and lab admins. Thin: read with selectors, write with services."""
from __future__ import annotations

import csv
import io
import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotations.models import Source
from annotations.selectors import class_names
from classifier.models import ModelVersion
from leukoportal.errors import bad_request_on_validation_error, error_text
from leukoportal.roles import LAB_ADMIN, REVIEWER, role_required

from . import learning_curve, metrics, plots, selectors, services
from .models import Evaluation


def _svg_response(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=60"
    return response


def table_response(table: dict, fmt: str, filename: str) -> HttpResponse:
    """A table as CSV (header row first) or JSON ({"title", "columns", "rows", "records"})."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(table["columns"])
        writer.writerows(table["rows"])
        response = HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
    elif fmt == "json":
        payload = dict(table, records=[dict(zip(table["columns"], row)) for row in table["rows"]])
        response = HttpResponse(json.dumps(payload, indent=1, default=str), content_type="application/json")
    else:
        raise Http404("Use .csv or .json.")
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


def _model_param(request, evaluation: Evaluation) -> str:
    model = request.GET.get("model") or "vote"
    if model not in dict(selectors.model_names(evaluation)):
        raise Http404(f"This evaluation has no classifier called {model!r}.")
    return model


@role_required(REVIEWER)
@require_GET
def index(request):
    overview = selectors.model_versions_overview()
    return render(request, "reports/index.html", {
        "overview": overview,
        "evaluations": selectors.evaluations_list()[:50],
        "versions": [row["version"] for row in overview],
    })


@role_required(LAB_ADMIN)
@require_POST
def evaluate(request):
    try:
        version = ModelVersion.objects.get(pk=int(request.POST.get("model_version", "")))
    except (ValueError, ModelVersion.DoesNotExist):
        messages.error(request, "Choose an existing model version to evaluate.")
        return redirect("reports:index")
    try:
        evaluation = services.evaluation_request(model_version=version, user=request.user)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("reports:index")
    messages.success(request, f"Evaluation {evaluation.pk} of v{version.pk} on {evaluation.n_cells} held-out cells "
                              "is queued; this page shows it when it is done.")
    return redirect("reports:index")


@role_required(REVIEWER)
@require_GET
def evaluation_detail(request, pk: int):
    evaluation = get_object_or_404(Evaluation.objects.select_related("model_version"), pk=pk)
    context = {"evaluation": evaluation, "version": evaluation.model_version, "names": class_names()}
    if evaluation.status == Evaluation.Status.SUCCEEDED:
        r = evaluation.results
        gate = selectors.gate_decision_latest(model_version=evaluation.model_version)
        context.update({
            "vote_worse": selectors.vote_worse_than_backbones(evaluation),
            "comparison": gate.comparison if gate and gate.evaluation_id == evaluation.pk else {},
            "vote": r["vote"],
            "table_ii": selectors.confusion_table_ii(evaluation, "vote"),
            "per_class": selectors.evaluation_table(evaluation, "per_class", "vote"),
            "summary": selectors.evaluation_table(evaluation, "summary"),
            "baselines": r.get("baselines") or {},
            "baseline_table": selectors.evaluation_table(evaluation, "baselines"),
            "backbone_details": [
                {"name": b, "per_class": selectors.evaluation_table(evaluation, "per_class", b),
                 "table_ii": selectors.confusion_table_ii(evaluation, b)}
                for b in r.get("backbones", [])
            ],
            "operating_point": (r.get("abstention") or {}).get("operating_point") or {},
            "gate": gate,
            "tables": selectors.TABLES,
        })
    return render(request, "reports/evaluation.html", context)


@role_required(REVIEWER)
@require_GET
def evaluation_download(request, pk: int, table: str, fmt: str):
    evaluation = get_object_or_404(Evaluation, pk=pk, status=Evaluation.Status.SUCCEEDED)
    if table not in selectors.TABLES:
        raise Http404(f"Unknown table {table!r}; use one of {', '.join(selectors.TABLES)}.")
    model = _model_param(request, evaluation)
    data = selectors.evaluation_table(evaluation, table, model)
    suffix = f"-{model}" if table in ("per_class", "confusion") else ""
    return table_response(data, fmt, f"evaluation-{evaluation.pk}-v{evaluation.model_version_id}-{table}{suffix}")


@role_required(REVIEWER)
@require_GET
def evaluation_plot(request, pk: int, kind: str):
    evaluation = get_object_or_404(Evaluation, pk=pk, status=Evaluation.Status.SUCCEEDED)
    model = _model_param(request, evaluation)
    summary = selectors.evaluation_summary_for(evaluation, model)
    if kind == "confusion":
        t2 = metrics.table_ii(summary["confusion_matrix"])
        return _svg_response(plots.confusion_heatmap(t2["labels"], t2["matrix"]))
    if kind == "sensspec":
        return _svg_response(plots.sensitivity_specificity_bars(summary["per_class"],
                                                                order=summary["confusion_matrix"]["labels"]))
    if kind == "abstention":
        ab = evaluation.results.get("abstention") or {}
        return _svg_response(plots.abstention_plot(ab.get("curve", []), ab.get("operating_point")))
    raise Http404("Unknown plot; use confusion, sensspec or abstention.")


@role_required(REVIEWER)
@require_GET
def version_history_plot(request, pk: int):
    version = get_object_or_404(ModelVersion, pk=pk)
    return _svg_response(plots.training_curves(version.history or []))


@role_required(REVIEWER)
@require_GET
def version_history_download(request, pk: int, fmt: str):
    version = get_object_or_404(ModelVersion, pk=pk)
    return table_response(selectors.history_table(version), fmt, f"v{version.pk}-training-history")


@role_required(REVIEWER)
@require_GET
def compare(request):
    """Two versions side by side, each on its latest evaluation (ideally the same held-out snapshot)."""
    versions = list(ModelVersion.objects.order_by("-id"))
    a_id, b_id = request.GET.get("a"), request.GET.get("b")
    context = {"versions": versions, "a_id": a_id, "b_id": b_id, "names": class_names()}
    if a_id and b_id:
        try:
            a = ModelVersion.objects.get(pk=int(a_id))
            b = ModelVersion.objects.get(pk=int(b_id))
        except (ValueError, ModelVersion.DoesNotExist):
            return HttpResponseBadRequest("Choose two existing model versions.")
        sides = []
        for v in (a, b):
            ev = selectors.evaluation_latest(model_version=v)
            sides.append({"version": v, "evaluation": ev,
                          "table_ii": selectors.confusion_table_ii(ev) if ev else None,
                          "vote": ev.vote if ev else None})
        classes = []
        for side in sides:
            for code in ((side["vote"] or {}).get("confusion_matrix") or {}).get("labels", []):
                if code not in classes:
                    classes.append(code)
        rows = []
        for code in classes:
            cells = [((s["vote"] or {}).get("per_class") or {}).get(code) for s in sides]
            sens = [c.get("sensitivity") if c else None for c in cells]
            delta = sens[1] - sens[0] if None not in sens else None
            rows.append({"code": code, "cells": cells, "delta": delta})
        same = all(s["evaluation"] for s in sides) and sides[0]["evaluation"].snapshot_hash == sides[1]["evaluation"].snapshot_hash
        comparison = (selectors.paired_comparison_of(sides[1]["evaluation"], sides[0]["evaluation"])
                      if all(s["evaluation"] for s in sides) else {})
        context.update({"sides": sides, "class_rows": rows, "same_snapshot": same, "comparison": comparison})
    return render(request, "reports/compare.html", context)


def _agreement(request) -> tuple[dict, dict]:
    """The query's parameters of the agreement over time (weeks, model_version, source; a
    ValidationError when they are wrong) as the selectors' arguments, and the agreement they select."""
    try:
        weeks = int(request.GET.get("weeks") or 26)
        version = int(request.GET["model_version"]) if request.GET.get("model_version") else None
    except ValueError:
        raise ValidationError("weeks and model_version must be whole numbers.") from None
    if not 1 <= weeks <= 520:
        raise ValidationError("weeks must be between 1 and 520.")
    source = request.GET.get("source") or None
    if source and source not in Source.values:
        raise ValidationError(f"Unknown source; use one of {', '.join(Source.values)}.")
    params = {"weeks": weeks, "model_version_id": version, "source": source}
    return params, selectors.agreement_over_time(**params)


@role_required(REVIEWER)
@require_GET
@bad_request_on_validation_error
def agreement(request):
    params, data = _agreement(request)
    return render(request, "reports/agreement.html", {
        "data": data, "ood": selectors.ood_share_over_time(**params), "weeks": params["weeks"],
        "model_version": params["model_version_id"], "source": params["source"],
        "versions": ModelVersion.objects.order_by("-id"), "sources": Source.choices,
        "query": request.GET.urlencode(), "names": class_names(),
        "curves": learning_curve.with_sparklines(learning_curve.source_learning_curves()),
    })


@role_required(REVIEWER)
@require_GET
@bad_request_on_validation_error
def agreement_plot(request):
    return _svg_response(plots.agreement_plot(_agreement(request)[1]["by_week"]))


@role_required(REVIEWER)
@require_GET
@bad_request_on_validation_error
def agreement_download(request, by: str, fmt: str):
    if by not in ("week", "version"):
        raise Http404("Use week or version.")
    data = _agreement(request)[1][f"by_{by}"]
    rows = []
    for row in data["rows"]:
        key = row["key"].date().isoformat() if hasattr(row["key"], "date") else row["key"]
        for code, cell in zip(data["classes"], row["cells"]):
            if cell:
                rows.append([key, code, cell["n"], cell["agree"], cell["referred"], cell["rate"]])
    table = {"title": f"Agreement of the model with the experts' final class, by {by}",
             "columns": [by if by == "week" else "model_version", "class", "cells", "agree", "referred", "agreement"],
             "rows": rows}
    return table_response(table, fmt, f"agreement-by-{by}")
