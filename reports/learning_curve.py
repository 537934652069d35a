"""Each source's learning curve: how the model versions read the cells a person verified on that
source (microscope/camera), version after version.

Per source and model version, on the cells of that source an expert decided (uploaded cells with a
final label; cells on slides a person verified or signed, from the slides' ledger) that the version
did **not** train on:

* ``verified``: how many such cells the version classified;
* ``referred``: how many it referred to an expert (its abstentions), and their share;
* ``accepted_accuracy``: of the calls it accepted, the share equal to the expert's class;
* ``accepted_wrong_share``: accepted and wrong, as a share of all its verified cells (silent errors);
* ``best_guess_accuracy``: on the referred cells, the share where its best guess (top class) was
  the expert's class;
* ``trained_on``: how many cells of this source the version's training snapshot held (the curve's x).
"""
from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Count, F, Q

from annotations.models import CellImage, Source as ImageKind
from classifier.models import Prediction
from slides.models import SlideCell
from sources.models import Source

from . import metrics
from .selectors import _ID_CHUNK, training_image_ids

_COUNTS = ("verified", "referred", "accepted_right", "referred_best_guess_right")


def _uploaded_cells():
    """Predictions of uploaded cells an expert labelled (cells found on slides are counted from the
    ledger): (queryset, source key, image key, version key, counts)."""
    qs = Prediction.objects.filter(image__final_label__isnull=False, image__final_label__is_abstain=False
                                   ).exclude(image__source=ImageKind.SLIDE_CELL)
    truth = F("image__final_label__code")
    counts = {"verified": Count("id"), "referred": Count("id", filter=Q(abstained=True)),
              "accepted_right": Count("id", filter=Q(abstained=False, label=truth)),
              "referred_best_guess_right": Count("id", filter=Q(abstained=True, top_class=truth))}
    return qs, "image__acquisition_source_id", "image_id", counts


def _slide_cells():
    """The slides' ledger: cells a person verified, the model's reading beside the expert's class;
    a superseded slide version is left out (its correction carries the cells)."""
    qs = (SlideCell.objects.filter(SlideCell.verified_q(), final_class__isnull=False, final_class__is_abstain=False,
                                   model_version__isnull=False, slide__next_version__isnull=True)
          .exclude(top_class=""))
    truth = F("final_class__code")
    referred = Q(predicted_class="unidentified")
    counts = {"verified": Count("id"), "referred": Count("id", filter=referred),
              "accepted_right": Count("id", filter=~referred & Q(predicted_class=truth)),
              "referred_best_guess_right": Count("id", filter=referred & Q(top_class=truth))}
    return qs, "slide__acquisition_source_id", "image_id", counts


def _add(acc: dict, key: tuple, row: dict, sign: int = 1) -> None:
    cur = acc.setdefault(key, dict.fromkeys(_COUNTS, 0))
    for k in _COUNTS:
        cur[k] += sign * row[k]


def _trained_on(version_ids) -> dict[tuple[int, int], int]:
    """(source id, version id) -> cells of that source in the version's training snapshot."""
    out: dict[tuple[int, int], int] = {}
    for version_id, ids in training_image_ids(version_ids).items():
        for start in range(0, len(ids), _ID_CHUNK):
            for r in (CellImage.objects.filter(pk__in=ids[start:start + _ID_CHUNK])
                      .values("acquisition_source_id").annotate(n=Count("id"))):
                key = (r["acquisition_source_id"], version_id)
                out[key] = out.get(key, 0) + r["n"]
    return out


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def _row(version_id: int, counts: dict, trained_on: int) -> dict:
    n, referred = counts["verified"], counts["referred"]
    accepted = n - referred
    right, guess = counts["accepted_right"], counts["referred_best_guess_right"]
    return {
        "model_version": version_id, "trained_on": trained_on, "verified": n,
        "referred": referred, "referred_share": _share(referred, n),
        "accepted": accepted, "accepted_right": right, "accepted_accuracy": _share(right, accepted),
        "accepted_accuracy_ci": metrics.wilson(right, accepted),
        "accepted_wrong": accepted - right, "accepted_wrong_share": _share(accepted - right, n),
        "referred_best_guess_right": guess, "best_guess_accuracy": _share(guess, referred),
    }


def source_learning_curves() -> list[dict]:
    """Every source (the default first, then by name) with its rows, one per model version that
    classified verified cells of that source, oldest version first (see the module's docstring)."""
    acc: dict[tuple[int, int], dict] = {}
    for qs, source_key, image_key, counts in (_uploaded_cells(), _slide_cells()):
        for r in qs.values(source_id=F(source_key), version_id=F("model_version_id")).annotate(**counts):
            _add(acc, (r["source_id"], r["version_id"]), r)
        versions = {v for _, v in acc}
        for version_id, ids in training_image_ids(versions).items():
            for start in range(0, len(ids), _ID_CHUNK):
                own = qs.filter(model_version_id=version_id, **{f"{image_key}__in": ids[start:start + _ID_CHUNK]})
                for r in own.values(source_id=F(source_key)).annotate(**counts):
                    _add(acc, (r["source_id"], version_id), r, sign=-1)
    trained = _trained_on({v for _, v in acc})
    curves = []
    for source in Source.objects.order_by("-is_default", "name", "id"):
        rows = [_row(v, acc[(s, v)], trained.get((s, v), 0))
                for s, v in sorted(k for k in acc if k[0] == source.pk) if acc[(s, v)]["verified"]]
        curves.append({"id": source.pk, "name": source.name, "active": source.active,
                       "is_default": source.is_default, "rows": rows})
    return curves


def sparkline_xy(values: Sequence[float | None], *, width: int = 160, height: int = 40,
                 pad: int = 4) -> list[tuple[float, float]]:
    """The points of shares in [0, 1] on a small plot, evenly spaced left to right (a missing value is
    skipped); 1 at the top."""
    n = len(values)
    step = (width - 2 * pad) / (n - 1) if n > 1 else 0
    return [(round(pad + i * step if n > 1 else width / 2, 1), round(pad + (1 - v) * (height - 2 * pad), 1))
            for i, v in enumerate(values) if v is not None]


def sparkline_points(values: Sequence[float | None], **size) -> str:
    """:func:`sparkline_xy` as an SVG polyline's ``points``."""
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in sparkline_xy(values, **size))


SPARK_WIDTH, SPARK_HEIGHT = 160, 40


def with_sparklines(curves: list[dict]) -> list[dict]:
    """The curves, each with ``plot``: the polylines of its accuracy of accepted calls and its share
    referred over its versions (for the page's small plot)."""
    for curve in curves:
        size = {"width": SPARK_WIDTH, "height": SPARK_HEIGHT}
        accuracy = [r["accepted_accuracy"] for r in curve["rows"]]
        referred = [r["referred_share"] for r in curve["rows"]]
        curve["plot"] = {
            "accuracy": sparkline_points(accuracy, **size), "accuracy_dots": sparkline_xy(accuracy, **size),
            "referred": sparkline_points(referred, **size), "referred_dots": sparkline_xy(referred, **size),
            **size,
        }
    return curves
