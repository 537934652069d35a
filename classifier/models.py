from django.conf import settings
from django.db import models
from django.db.models import Q

from classifier.ml.reasons import CODES_HELP, OUT_OF_DISTRIBUTION, reason_text
from classifier.ml.voting import DEFAULT, DEFAULT_THRESHOLD


class ReferralReasons:
    """For a row with the model's ``reasons`` (a list of reason codes, empty when the model's call
    was accepted): a model prediction, or a cell counted on a slide."""

    @property
    def out_of_distribution(self) -> bool:
        return OUT_OF_DISTRIBUTION in (self.reasons or [])

    @property
    def reason(self) -> str:
        """Why the model referred the cell, in words ("" when it was accepted)."""
        return reason_text(self.reasons or [])


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training"
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"
        FAILED = "failed"

    ensemble = models.CharField(max_length=20)
    mode = models.CharField(max_length=20, default="default")
    backbones = models.JSONField(default=list)
    classes = models.JSONField(default=list)
    checkpoint = models.CharField(max_length=300, blank=True, help_text="Path under MODEL_DIR.")
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    snapshot = models.JSONField(default=dict, help_text="Frozen training set: image ids/sha256 and labels.")
    snapshot_hash = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    history = models.JSONField(default=list)
    default_threshold = models.FloatField(
        default=DEFAULT_THRESHOLD,
        help_text="The confidence threshold this version applies unless the lab sets its own (never 0).")
    threshold_source = models.CharField(
        max_length=20, default=DEFAULT, help_text="Where that threshold comes from: 'validation' (fitted) or 'default'.")
    threshold_why = models.CharField(max_length=300, blank=True, help_text="Where that threshold comes from, in words.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.TRAINING, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="one_active_model_version")
        ]

    def __str__(self):
        return f"v{self.pk} {self.ensemble}/{self.mode} ({self.status})"


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ensemble = models.CharField(max_length=20, default="offline")
    mode = models.CharField(max_length=20, default="default")
    epochs = models.PositiveIntegerField(null=True, blank=True)
    trigger = models.CharField(max_length=20, default="admin")  # admin | api | schedule | cli
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]


class Prediction(ReferralReasons, models.Model):
    """The ensemble's reading of one image by one model version (at most one per pair)."""

    image = models.ForeignKey("annotations.CellImage", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    label = models.CharField(max_length=40, help_text="Voted class code, or 'unidentified' when abstained.")
    top_class = models.CharField(max_length=40)
    confidence = models.FloatField()
    agreement = models.PositiveSmallIntegerField()
    n_backbones = models.PositiveSmallIntegerField()
    abstained = models.BooleanField(default=False)
    reasons = models.JSONField(
        default=list, blank=True,
        help_text="Why the cell was referred to an expert. " + CODES_HELP,
    )
    ood_score = models.FloatField(
        null=True, blank=True,
        help_text="How unlike the version's training images the cell is (null: the version has no such score).",
    )
    per_backbone = models.JSONField(default=dict)
    probabilities = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_image_version")
        ]
        indexes = [models.Index(fields=["model_version", "confidence"], name="prediction_by_confidence")]

    @property
    def agreement_text(self) -> str:
        return f"{self.agreement}/{self.n_backbones}"
