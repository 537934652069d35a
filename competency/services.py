"""Writes of the competency room: build a test (a seeded draw of decided cells), assign it, take it
(answers, submission, score), sign the record off, let a model version sit it. Every write is audited."""
from __future__ import annotations

import datetime
import secrets

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from annotations.audit import audit_record
from annotations.models import AuditAction, CellClass
from classifier.enqueue import classification_enqueue_on_commit
from classifier.models import ModelVersion, Prediction
from leukoportal.roles import LABELLER, has_role

from . import selectors
from .draw import DrawRefused, draw
from .exam import exam_forget
from .models import Answer, Assignment, ModelSitting, ProficiencyTest, TestCell
from .scoring import Item, score

MAX_SIZE = 500


class CompetencyConflict(Exception):
    """The test's state forbids this (already submitted, frozen, not yours to take)."""


def _check_definition(*, size: int, class_minimums: dict, critical_classes: list, pass_min_agreement: float) -> None:
    known = set(CellClass.objects.filter(is_abstain=False).values_list("code", flat=True))
    errors = {}
    if not 1 <= size <= MAX_SIZE:
        errors["size"] = f"A test has between 1 and {MAX_SIZE} cells."
    unknown = sorted((set(class_minimums) | set(critical_classes)) - known)
    if unknown:
        errors["class_minimums"] = f"Unknown class(es): {', '.join(unknown)}."
    if any((not isinstance(n, int)) or n < 0 for n in class_minimums.values()):
        errors["class_minimums"] = "Each class minimum is a whole number, 0 or more."
    if not 0 <= pass_min_agreement <= 1:
        errors["pass_min_agreement"] = "The minimum agreement is between 0 and 1."
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def test_create(*, actor, name: str, size: int, class_minimums: dict[str, int], pass_min_agreement: float,
                critical_classes: list[str], acquisition_source=None, decided_from: datetime.date | None = None,
                decided_to: datetime.date | None = None, include_heldout: bool = False,
                seed: int | None = None, previous: ProficiencyTest | None = None) -> ProficiencyTest:
    """Draw a test's cells from the decided cells (seeded; a seed is chosen and stored when none is
    given). Refused, with nothing stored, when a class has too few decided cells (each is named)."""
    class_minimums = {k: v for k, v in class_minimums.items() if v}
    _check_definition(size=size, class_minimums=class_minimums, critical_classes=critical_classes,
                      pass_min_agreement=pass_min_agreement)
    if decided_from and decided_to and decided_from > decided_to:
        raise ValidationError({"decided_to": "The date range ends before it starts."})
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    filters = dict(acquisition_source=acquisition_source, decided_from=decided_from, decided_to=decided_to,
                   include_heldout=include_heldout)
    try:
        picked = draw(selectors.decided_pool(**filters), size=size, minimums=class_minimums, seed=seed)
    except DrawRefused as exc:
        raise ValidationError({"class_minimums": str(exc)}) from None
    test = ProficiencyTest.objects.create(
        name=name, size=size, class_minimums=class_minimums, pass_min_agreement=pass_min_agreement,
        critical_classes=sorted(set(critical_classes)), seed=seed, created_by=actor, previous=previous,
        version=(previous.version + 1) if previous else 1, **filters)
    classes = {c.code: c for c in CellClass.objects.all()}
    adjudicated = selectors.adjudicated_ids([pk for pk, _ in picked])
    TestCell.objects.bulk_create([
        TestCell(test=test, position=i, image_id=pk, reference=classes[code],
                 decided_by="adjudication" if pk in adjudicated else "agreement")
        for i, (pk, code) in enumerate(picked, start=1)])
    audit_record(actor=actor, action=AuditAction.COMPETENCY_TEST_CREATE, target=test,
                 after={"name": name, "version": test.version, "size": size, "seed": seed,
                        "class_minimums": class_minimums, "critical_classes": test.critical_classes,
                        "pass_min_agreement": pass_min_agreement, "include_heldout": include_heldout,
                        "source": acquisition_source.pk if acquisition_source else None,
                        "decided_from": str(decided_from or ""), "decided_to": str(decided_to or ""),
                        "cells": [pk for pk, _ in picked]})
    return test


def test_new_version(*, actor, test: ProficiencyTest, seed: int | None = None) -> ProficiencyTest:
    """The same definition drawn again (a new seed unless given): version + 1; the old one stays as it is."""
    return test_create(actor=actor, name=test.name, size=test.size, class_minimums=test.class_minimums,
                       pass_min_agreement=test.pass_min_agreement, critical_classes=test.critical_classes,
                       acquisition_source=test.acquisition_source, decided_from=test.decided_from,
                       decided_to=test.decided_to, include_heldout=test.include_heldout, seed=seed, previous=test)


@transaction.atomic
def test_assign(*, actor, test: ProficiencyTest, people: list, due_date: datetime.date) -> list[Assignment]:
    """Give the test to each person (who must hold a role) with a due date; the first assignment freezes
    the test. A person who already has it is refused (named), nothing stored."""
    test = ProficiencyTest.objects.select_for_update().get(pk=test.pk)
    if not people:
        raise ValidationError({"people": "Choose at least one person."})
    if due_date < timezone.localdate():
        raise ValidationError({"due_date": "The due date is in the past."})
    without_role = [p.get_username() for p in people if not has_role(p, LABELLER)]
    if without_role:
        raise ValidationError({"people": f"No lab role: {', '.join(without_role)}."})
    already = set(Assignment.objects.filter(test=test, person__in=people).values_list("person__username", flat=True))
    if already:
        raise ValidationError({"people": f"Already assigned this test: {', '.join(sorted(already))}."})
    if not test.frozen:
        test.frozen_at = timezone.now()
        test.save(update_fields=["frozen_at"])
        audit_record(actor=actor, action=AuditAction.COMPETENCY_TEST_FREEZE, target=test,
                     after={"frozen_at": test.frozen_at.isoformat(), "cells": test.cells.count()})
    made = []
    for person in people:
        a = Assignment.objects.create(test=test, person=person, due_date=due_date, assigned_by=actor)
        audit_record(actor=actor, action=AuditAction.COMPETENCY_ASSIGN, target=a,
                     after={"test": test.pk, "person": person.get_username(), "due_date": due_date.isoformat()})
        exam_forget(person)
        made.append(a)
    return made


def _own_open(assignment: Assignment, user) -> None:
    if assignment.person_id != user.pk:
        raise PermissionDenied("This test is assigned to someone else.")
    if assignment.status == Assignment.Status.SUBMITTED:
        raise CompetencyConflict("This test is submitted: one attempt only.")


@transaction.atomic
def attempt_start(*, assignment: Assignment, user) -> Assignment:
    """Open (or resume) the taker's one attempt."""
    assignment = Assignment.objects.select_for_update().get(pk=assignment.pk)
    _own_open(assignment, user)
    if assignment.status == Assignment.Status.ASSIGNED:
        assignment.status = Assignment.Status.IN_PROGRESS
        assignment.started_at = timezone.now()
        assignment.save(update_fields=["status", "started_at"])
        audit_record(actor=user, action=AuditAction.COMPETENCY_START, target=assignment,
                     after={"test": assignment.test_id})
    return assignment


@transaction.atomic
def answer_save(*, assignment: Assignment, user, image_id: int, cell_class: CellClass | None, unsure: bool,
                seconds: float) -> Answer:
    """Record the taker's answer on one cell of their open attempt (the last answer counts; ``seconds``
    is the time spent on the cell so far, kept as the largest reported). ``cell_class`` None clears it."""
    assignment = attempt_start(assignment=assignment, user=user)
    cell = TestCell.objects.filter(test_id=assignment.test_id, image_id=image_id).first()
    if cell is None:
        raise ValidationError({"image": f"Cell {image_id} is not in this test."})
    if cell_class is not None and cell_class.is_abstain:
        raise ValidationError({"cell_class": "Answer with a class, or mark the cell 'not sure'."})
    if not 0 <= seconds <= 24 * 3600:
        raise ValidationError({"seconds": "The time on a cell is between 0 and 86400 seconds."})
    answer, _ = Answer.objects.select_for_update().get_or_create(assignment=assignment, cell=cell)
    before = {"answer": answer.answer.code if answer.answer_id else None, "unsure": answer.unsure}
    answer.answer, answer.unsure, answer.seconds = cell_class, unsure, max(answer.seconds, float(seconds))
    answer.save()
    audit_record(actor=user, action=AuditAction.COMPETENCY_ANSWER, target=("Assignment", assignment.pk),
                 before=before, after={"cell": cell.position, "answer": cell_class.code if cell_class else None,
                                       "unsure": unsure, "seconds": answer.seconds})
    return answer


def _items_for(assignment: Assignment) -> list[Item]:
    answers = {a.cell_id: a for a in assignment.answers.select_related("answer")}
    items = []
    for cell in assignment.test.cells.select_related("reference"):
        a = answers.get(cell.pk)
        items.append(Item(position=cell.position, reference=cell.reference.code,
                          given=a.answer.code if a and a.answer_id else None, unsure=bool(a and a.unsure),
                          seconds=a.seconds if a else None))
    return items


def test_score(*, test: ProficiencyTest, items: list[Item]) -> dict:
    return score(items, classes=selectors.class_codes(), min_agreement=test.pass_min_agreement,
                 critical=test.critical_classes)


@transaction.atomic
def attempt_submit(*, assignment: Assignment, user) -> Assignment:
    """Close the attempt, score it against the reference and store the score (unanswered cells count as
    not correct). After this the taker sees the reference labels."""
    assignment = attempt_start(assignment=assignment, user=user)
    result = test_score(test=assignment.test, items=_items_for(assignment))
    assignment.status = Assignment.Status.SUBMITTED
    assignment.submitted_at = timezone.now()
    assignment.result = result
    assignment.passed = result["passed"]
    assignment.save(update_fields=["status", "submitted_at", "result", "passed"])
    audit_record(actor=user, action=AuditAction.COMPETENCY_SUBMIT, target=assignment,
                 after={"agreement": result["agreement"], "kappa": result["kappa"], "passed": result["passed"],
                        "reasons": result["reasons"]})
    exam_forget(user)
    return assignment


@transaction.atomic
def attempt_sign_off(*, assignment: Assignment, actor, note: str = "") -> Assignment:
    """The lab admin signs the record of a submitted attempt off (once)."""
    assignment = Assignment.objects.select_for_update().get(pk=assignment.pk)
    if assignment.status != Assignment.Status.SUBMITTED:
        raise CompetencyConflict("Only a submitted attempt can be signed off.")
    if assignment.signed_off_at:
        raise CompetencyConflict("This record is already signed off.")
    if assignment.person_id == actor.pk:
        raise PermissionDenied("A lab admin does not sign off their own attempt.")
    assignment.signed_off_by, assignment.signed_off_at, assignment.sign_off_note = actor, timezone.now(), note
    assignment.save(update_fields=["signed_off_by", "signed_off_at", "sign_off_note"])
    audit_record(actor=actor, action=AuditAction.COMPETENCY_SIGN_OFF, target=assignment,
                 after={"note": note, "passed": assignment.passed})
    return assignment


@transaction.atomic
def model_sit(*, actor, test: ProficiencyTest, model_version: ModelVersion) -> ModelSitting:
    """The model version sits the test: its calls on the test's cells, scored like a person's, its
    referrals counted as not correct (and reported apart). Cells it has not classified yet are queued
    for classification; the sitting is scored once every cell has a call (call this again)."""
    if model_version.status not in (ModelVersion.Status.ACTIVE, ModelVersion.Status.CANDIDATE):
        raise ValidationError({"model_version": "Only the active model or a candidate version sits a test."})
    cells = list(test.cells.select_related("reference"))
    latest: dict[int, Prediction] = {}
    for p in Prediction.objects.filter(model_version=model_version, image_id__in=[c.image_id for c in cells]) \
            .order_by("image_id", "-id"):
        latest.setdefault(p.image_id, p)
    sitting, created = ModelSitting.objects.get_or_create(
        test=test, model_version=model_version, defaults={"created_by": actor, "model_status": model_version.status})
    missing = [c.image_id for c in cells if c.image_id not in latest]
    if missing:
        classification_enqueue_on_commit(image_ids=missing, model_version=model_version)
    else:
        items = [Item(position=c.position, reference=c.reference.code, given=latest[c.image_id].top_class,
                      referred=latest[c.image_id].abstained) for c in cells]
        sitting.calls = {str(c.position): {"class": latest[c.image_id].top_class,
                                           "referred": latest[c.image_id].abstained} for c in cells}
        sitting.result = test_score(test=test, items=items)
        sitting.save(update_fields=["calls", "result"])
    audit_record(actor=actor, action=AuditAction.COMPETENCY_MODEL_SIT, target=sitting,
                 after={"test": test.pk, "model_version": model_version.pk, "waiting_for": len(missing),
                        "agreement": sitting.result["agreement"] if sitting.result else None})
    return sitting

