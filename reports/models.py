"""Stored held-out evaluations of model versions and the promotion gate's decisions."""
from django.conf import settings
from django.db import models


class Evaluation(models.Model):
    """One model version scored on one frozen snapshot of the held-out split (final labels only)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    model_version = models.ForeignKey("classifier.ModelVersion", on_delete=models.CASCADE, related_name="evaluations")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=20, default="gate")  # gate | admin | api | comparison
    snapshot = models.JSONField(default=dict, help_text="Frozen held-out cells: [[image id, sha256, final class]].")
    snapshot_hash = models.CharField(max_length=64, blank=True, db_index=True)
    n_cells = models.PositiveIntegerField(default=0)
    threshold = models.FloatField(null=True, blank=True, help_text="Abstention threshold of the operating point.")
    min_agreement = models.PositiveSmallIntegerField(null=True, blank=True)
    results = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"evaluation {self.pk} of v{self.model_version_id} ({self.status})"

    @property
    def vote(self) -> dict:
        return (self.results or {}).get("vote") or {}

    @property
    def overall_accuracy(self) -> float | None:
        return self.vote.get("overall_accuracy")


class GateDecision(models.Model):
    """What the promotion gate decided for a freshly trained version, and why."""

    class Outcome(models.TextChoices):
        ACTIVATED = "activated", "Activated (not worse than the active version)"
        FIRST = "first", "Activated (no version was active)"
        UNEVALUATED_ACTIVATED = "unevaluated_activated", "Activated without evaluation (no version was active)"
        CANDIDATE = "candidate", "Kept as a candidate (worse than the active version)"
        TOO_SMALL = "too_small", "Kept as a candidate (held-out set too small to decide)"
        NOT_EVALUATED = "not_evaluated", "Kept as a candidate (could not be evaluated)"

    model_version = models.ForeignKey("classifier.ModelVersion", on_delete=models.CASCADE, related_name="gate_decisions")
    evaluation = models.ForeignKey(Evaluation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    compared_with = models.ForeignKey("classifier.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    compared_evaluation = models.ForeignKey(Evaluation, null=True, blank=True, on_delete=models.SET_NULL,
                                            related_name="+")
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    reasons = models.JSONField(default=list)
    margin = models.FloatField(null=True, blank=True)
    comparison = models.JSONField(
        default=dict, blank=True,
        help_text="Paired comparison with the active version on the same cells (metrics.paired_comparison).")
    sample = models.JSONField(
        default=dict, blank=True,
        help_text="Held-out cells in total and per class against the lab's minimums when the gate decided.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    @property
    def activated(self) -> bool:
        return self.outcome in (self.Outcome.ACTIVATED, self.Outcome.FIRST, self.Outcome.UNEVALUATED_ACTIVATED)
