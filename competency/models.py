"""Proficiency tests built from the lab's own decided cells.

The rows point at other apps' rows by name only ("annotations.CellImage"), never by import: the
open-test check (:mod:`competency.exam`) sits below the annotations app, which asks it whether a
reader may see a cell's reference label and other readings.
"""
from django.conf import settings
from django.db import models
from django.db.models import Q


class ProficiencyTest(models.Model):
    """A test definition and its drawn cells. Frozen (immutable) once first assigned; a changed test is
    a new version (a new row pointing at the one it replaces)."""

    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    size = models.PositiveIntegerField(help_text="Cells in the test.")
    class_minimums = models.JSONField(default=dict, help_text="Class code -> minimum cells of that class.")
    acquisition_source = models.ForeignKey("sources.Source", null=True, blank=True, on_delete=models.PROTECT,
                                           related_name="+", help_text="Only cells of this source (none: any).")
    decided_from = models.DateField(null=True, blank=True, help_text="Cells decided on or after this day.")
    decided_to = models.DateField(null=True, blank=True, help_text="Cells decided on or before this day.")
    include_heldout = models.BooleanField(default=False, help_text="Held-out cells may be drawn too.")
    seed = models.BigIntegerField(help_text="The draw's seed: the same definition and seed draw the same cells.")
    pass_min_agreement = models.FloatField(default=0.9, help_text="Overall agreement needed to pass (0-1).")
    critical_classes = models.JSONField(
        default=list, blank=True,
        help_text="Class codes with zero tolerance: one such cell called anything else fails the test.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    frozen_at = models.DateTimeField(null=True, blank=True, help_text="First assigned: the cells can no longer change.")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.name} v{self.version}"

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


class TestCell(models.Model):
    """One cell of a test with the reference label it was drawn with (copied: a later change of the
    cell's final label does not change a frozen test)."""

    test = models.ForeignKey(ProficiencyTest, on_delete=models.CASCADE, related_name="cells")
    position = models.PositiveIntegerField()
    image = models.ForeignKey("annotations.CellImage", on_delete=models.PROTECT, related_name="+")
    reference = models.ForeignKey("annotations.CellClass", on_delete=models.PROTECT, related_name="+")
    decided_by = models.CharField(max_length=20, help_text="'agreement' or 'adjudication'.")

    class Meta:
        ordering = ["test", "position"]
        constraints = [
            models.UniqueConstraint(fields=["test", "image"], name="competency_one_cell_once_per_test"),
            models.UniqueConstraint(fields=["test", "position"], name="competency_one_position_per_test"),
        ]


class Assignment(models.Model):
    """A test given to one person, with a due date. One attempt per assignment."""

    class Status(models.TextChoices):
        ASSIGNED = "assigned", "Assigned"
        IN_PROGRESS = "in_progress", "In progress"
        SUBMITTED = "submitted", "Submitted"

    test = models.ForeignKey(ProficiencyTest, on_delete=models.PROTECT, related_name="assignments")
    person = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="competency_assignments")
    due_date = models.DateField()
    assigned_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    assigned_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ASSIGNED, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="The score, frozen at submission.")
    passed = models.BooleanField(null=True, blank=True)
    signed_off_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="+")
    signed_off_at = models.DateTimeField(null=True, blank=True)
    sign_off_note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["test", "person"], name="competency_one_assignment_per_person")]

    @property
    def is_open(self) -> bool:
        return self.status != self.Status.SUBMITTED


class Answer(models.Model):
    """The taker's answer on one cell of their attempt; saved again while the test is open (the last
    answer counts), time accumulated."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="answers")
    cell = models.ForeignKey(TestCell, on_delete=models.PROTECT, related_name="answers")
    answer = models.ForeignKey("annotations.CellClass", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="+")
    unsure = models.BooleanField(default=False)
    seconds = models.FloatField(default=0.0, help_text="Time spent on the cell, in seconds.")
    answered_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["cell__position"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "cell"], name="competency_one_answer_per_cell"),
            models.CheckConstraint(condition=Q(seconds__gte=0), name="competency_seconds_not_negative"),
        ]


class ModelSitting(models.Model):
    """A model version sitting a test: its calls on the test's cells scored like a person's."""

    test = models.ForeignKey(ProficiencyTest, on_delete=models.PROTECT, related_name="model_sittings")
    model_version = models.ForeignKey("classifier.ModelVersion", on_delete=models.PROTECT, related_name="+")
    model_status = models.CharField(max_length=12, help_text="The version's status when it sat the test.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    result = models.JSONField(null=True, blank=True)
    calls = models.JSONField(default=dict, help_text="Cell position -> {class, referred}.")

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["test", "model_version"], name="competency_one_sitting_per_version")]
