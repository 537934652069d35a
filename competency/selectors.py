"""Reads of the competency room: the decided cells a test may draw from, a person's tests and history,
the lab's summary."""
from __future__ import annotations

import datetime

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone

from annotations.models import Adjudication, CellClass, CellImage, Split
from annotations.selectors import LABELLING_SOURCES

from .models import Assignment, ModelSitting, ProficiencyTest, TestCell
from .scoring import confusions_across


def decided_cells(*, acquisition_source=None, decided_from: datetime.date | None = None,
                  decided_to: datetime.date | None = None, include_heldout: bool = False) -> QuerySet[CellImage]:
    """Cells whose reference label is decided (final by the readers' agreement, or adjudicated), never
    one still open or waiting for adjudication, and never the 'unidentified' class."""
    qs = CellImage.objects.filter(source__in=LABELLING_SOURCES, final_label__isnull=False, needs_review=False,
                                  final_label__is_abstain=False)
    if not include_heldout:
        qs = qs.filter(split=Split.TRAIN)
    if acquisition_source is not None:
        qs = qs.filter(acquisition_source=acquisition_source)
    if decided_from:
        qs = qs.filter(final_label_at__date__gte=decided_from)
    if decided_to:
        qs = qs.filter(final_label_at__date__lte=decided_to)
    return qs


def decided_pool(**filters) -> dict[str, list[int]]:
    """Class code -> ids of the decided cells (see :func:`decided_cells`)."""
    pool: dict[str, list[int]] = {}
    for pk, code in decided_cells(**filters).values_list("pk", "final_label__code"):
        pool.setdefault(code, []).append(pk)
    return pool


def decided_counts(**filters) -> list[dict]:
    """Each active class with its number of decided cells (what a test definition may ask for)."""
    pool = decided_pool(**filters)
    return [{"code": c.code, "name": c.name, "decided": len(pool.get(c.code, []))}
            for c in CellClass.objects.filter(active=True, is_abstain=False)]


def adjudicated_ids(image_ids) -> set[int]:
    return set(Adjudication.objects.filter(image_id__in=image_ids).values_list("image_id", flat=True))


def tests_list() -> QuerySet[ProficiencyTest]:
    return ProficiencyTest.objects.select_related("created_by", "acquisition_source")


def test_cells(*, test: ProficiencyTest) -> QuerySet[TestCell]:
    return test.cells.select_related("reference", "image")


def class_codes() -> list[str]:
    return list(CellClass.objects.order_by("display_order", "code").values_list("code", flat=True))


def class_names() -> dict[str, str]:
    return dict(CellClass.objects.values_list("code", "name"))


def assignments_of(*, person) -> QuerySet[Assignment]:
    return Assignment.objects.filter(person=person).select_related("test", "signed_off_by").order_by("-assigned_at")


def assignments_open_of(*, person) -> QuerySet[Assignment]:
    return assignments_of(person=person).exclude(status=Assignment.Status.SUBMITTED).order_by("due_date")


def assignments_all() -> QuerySet[Assignment]:
    return Assignment.objects.select_related("test", "person", "signed_off_by").order_by("-assigned_at")


def assignment_state(assignment: Assignment, *, today: datetime.date | None = None) -> str:
    """due, overdue, passed or failed."""
    today = today or timezone.localdate()
    if assignment.status == Assignment.Status.SUBMITTED:
        return "passed" if assignment.passed else "failed"
    return "overdue" if assignment.due_date < today else "due"


def lab_summary(*, today: datetime.date | None = None) -> dict:
    """Every assignment with its state, counts per state, the latest result per person, and the
    confusions summed across every submitted attempt."""
    rows = list(assignments_all())
    counts = {"due": 0, "overdue": 0, "passed": 0, "failed": 0}
    people: dict[int, dict] = {}
    for a in rows:
        a.state = assignment_state(a, today=today)
        counts[a.state] += 1
        entry = people.setdefault(a.person_id, {"person": a.person.get_username(), "assignments": 0, "last": None})
        entry["assignments"] += 1
        if a.submitted_at and (entry["last"] is None or a.submitted_at > entry["last"].submitted_at):
            entry["last"] = a
    results = [a.result for a in rows if a.result]
    return {"assignments": rows, "counts": counts, "people": sorted(people.values(), key=lambda e: e["person"]),
            "confusions": confusions_across(results)}


def model_sittings(*, test: ProficiencyTest) -> QuerySet[ModelSitting]:
    return test.model_sittings.select_related("model_version")


def people_assignable():
    """Active users who hold a role (anyone who classifies cells)."""
    return get_user_model().objects.filter(is_active=True, groups__name__in=["labeller", "reviewer", "lab_admin"]) \
        .distinct().order_by("username")

