"""A slide is one sample: smear fields (or ready-cropped cells) -> cells -> a differential count."""
from django.conf import settings
from django.db import models

from classifier.models import ReferralReasons
from sources.models import default_source_id


class Slide(models.Model):
    class Status(models.TextChoices):
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready for verification"
        VERIFIED = "verified", "Verified (every cell resolved)"
        AWAITING_RELEASE = "awaiting_release", "Awaiting release"  # two-step release: submitted, not signed
        SIGNED = "signed", "Signed"

    class TaskState(models.TextChoices):
        IDLE = "idle", "Idle"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        FIELDS = "fields", "Smear fields"
        CELLS = "cells", "Cropped cells"

    TARGETS = (100, 200, 400)

    code = models.CharField(max_length=40, db_index=True, help_text="De-identified accession code.")
    version = models.PositiveIntegerField(default=1)
    previous = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="next_version",
        help_text="The signed version this one corrects.",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FIELDS)
    acquisition_source = models.ForeignKey(
        "sources.Source", on_delete=models.PROTECT, default=default_source_id, related_name="slides",
        verbose_name="source", help_text="The microscope/camera its images come from (sources.Source).")
    wbc_count = models.DecimalField(
        max_digits=7, decimal_places=2, null=True, blank=True, help_text="Total WBC count, 10^9/L (optional)."
    )
    notes = models.TextField(blank=True, max_length=2000)
    target_count = models.PositiveSmallIntegerField(default=100, choices=[(t, str(t)) for t in TARGETS])
    microns_per_pixel = models.FloatField(
        null=True, blank=True,
        help_text="The fields' scale (µm per pixel). Blank: measured on each field's red cells (about 7.5 µm).",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROCESSING, db_index=True)
    task_state = models.CharField(max_length=10, choices=TaskState.choices, default=TaskState.IDLE)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the processing was last queued or last reported progress: the sweep queues again a slide "
                  "queued or running without a sign of life for too long (its message or its worker was lost).",
    )
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    model_version = models.ForeignKey(
        "classifier.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    report = models.JSONField(null=True, blank=True, help_text="The differential frozen at signing.")
    correction_reason = models.CharField(max_length=500, blank=True)
    sign_reason = models.CharField(
        max_length=500, blank=True, help_text="Why it was signed although warnings stood (e.g. below the target count).",
    )
    # The reviewer's interpretive comment and the two-step release (slides.release): frozen into ``report``.
    comment = models.TextField(blank=True, max_length=2000, help_text="The reviewer's interpretive comment.")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Two-step release: the technologist who verified and submitted the slide.")
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["code", "version"], name="one_slide_per_code_version")]

    def __str__(self):
        return f"{self.code} v{self.version}"

    @property
    def is_signed(self) -> bool:
        return self.status == self.Status.SIGNED

    @property
    def is_superseded(self) -> bool:
        return hasattr(self, "next_version") and self.next_version is not None

    @property
    def successor(self) -> "Slide | None":
        """The version that corrects this one (signed, or still being verified), or None. A list
        reads it with ``select_related("next_version")``."""
        return self.next_version if self.is_superseded else None

    @property
    def superseded_by(self) -> "Slide | None":
        """The newer version whose signed report replaces this one's, or None: a correction still
        being verified leaves this version's report standing (``selectors.slide_report_release``)."""
        successor = self.successor
        return successor if successor is not None and successor.is_signed else None


class SlideField(models.Model):
    """One smear field image of a slide (stored de-identified as a CellImage of source 'field')."""

    slide = models.ForeignKey(Slide, on_delete=models.CASCADE, related_name="fields")
    image = models.ForeignKey("annotations.CellImage", on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField(default=0)
    detected = models.BooleanField(default=False)
    n_cells = models.PositiveIntegerField(default=0)
    scale = models.JSONField(
        default=dict, blank=True, help_text="The scale detection used: µm per pixel and its source (red cells, setting, default).",
    )
    # Platelets and red cells found in the field (slides.platelets); None until looked for.
    platelet_count = models.PositiveIntegerField(null=True, blank=True)
    platelet_clumps = models.PositiveIntegerField(default=0)
    platelet_boxes = models.JSONField(default=list, blank=True, help_text="[x0, y0, x1, y1, count, clump] each.")
    platelet_count_corrected = models.PositiveIntegerField(
        null=True, blank=True, help_text="The reviewer's count of this field's platelets (the report uses it).")
    platelet_corrected_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                              on_delete=models.PROTECT, related_name="+")
    platelet_corrected_at = models.DateTimeField(null=True, blank=True)
    red_cell_count = models.PositiveIntegerField(null=True, blank=True)
    red_cell_boxes = models.JSONField(default=list, blank=True)

    @property
    def platelets_reported(self) -> int | None:
        """The platelet count the report uses: the reviewer's correction, else the detector's."""
        return self.platelet_count_corrected if self.platelet_count_corrected is not None else self.platelet_count

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["slide", "image"], name="one_field_per_slide_image")]


class SlideCell(ReferralReasons, models.Model):
    """One cell found in a field (or uploaded cropped): the model's pre-classification and the
    expert's final class side by side — the ledger of agreement over time."""

    class Status(models.TextChoices):
        COUNTED = "counted", "Counted"
        NOT_COUNTED = "not_counted", "Not counted"

    slide = models.ForeignKey(Slide, on_delete=models.CASCADE, related_name="cells")
    field = models.ForeignKey(SlideField, null=True, blank=True, on_delete=models.CASCADE, related_name="cells")
    x0 = models.IntegerField(null=True, blank=True)
    y0 = models.IntegerField(null=True, blank=True)
    x1 = models.IntegerField(null=True, blank=True)
    y1 = models.IntegerField(null=True, blank=True)
    detector_kind = models.CharField(max_length=10, blank=True, help_text="wbc / smudge / artefact (detector).")
    detector_score = models.FloatField(null=True, blank=True)
    image = models.ForeignKey("annotations.CellImage", on_delete=models.PROTECT, related_name="slide_cells")
    # pre-classification
    predicted_class = models.CharField(max_length=40, blank=True)
    top_class = models.CharField(max_length=40, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    agreement = models.PositiveSmallIntegerField(null=True, blank=True)
    n_backbones = models.PositiveSmallIntegerField(null=True, blank=True)
    model_version = models.ForeignKey(
        "classifier.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reasons = models.JSONField(default=list, blank=True, help_text="Why the model referred the cell (codes).")
    ood_score = models.FloatField(null=True, blank=True, help_text="How unlike the model's training images the cell is.")
    # expert
    final_class = models.ForeignKey(
        "annotations.CellClass", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COUNTED)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["slide", "status"])]

    @property
    def box(self) -> list[int] | None:
        if self.x0 is None:
            return None
        return [self.x0, self.y0, self.x1, self.y1]

    @property
    def agreement_text(self) -> str:
        if self.agreement is None or not self.n_backbones:
            return ""
        return f"{self.agreement}/{self.n_backbones}"

    @staticmethod
    def verified_q() -> models.Q:
        """Cells a person has verified: classified or marked by hand, or on a signed slide (signing
        confirms every cell). Until then a cell's final class is only the model's own call."""
        return models.Q(changed_by__isnull=False) | models.Q(slide__status=Slide.Status.SIGNED)

    @property
    def verified(self) -> bool:
        """An expert decided on this cell (confirmed or changed its class, or its counting)."""
        return self.changed_by_id is not None

    @property
    def unresolved(self) -> bool:
        return self.status == self.Status.COUNTED and (self.final_class is None or self.final_class.is_abstain)

    @property
    def referred(self) -> bool:
        """The model referred the cell to an expert: its top class is a best guess, not a call
        (an accepted call is its top class; a referral is labelled 'unidentified')."""
        return bool(self.top_class) and self.predicted_class != self.top_class


class ReferenceInterval(models.Model):
    """A lab-configurable reference interval and the flags raised outside it.

    ``codes`` is one class code or several joined by '+' (summed: e.g. band + immature
    granulocytes for a left shift)."""

    class Measure(models.TextChoices):
        PERCENT = "percent", "% of counted leukocytes"
        ABSOLUTE = "absolute", "Absolute, 10^9/L (needs the WBC count)"
        PER_100_WBC = "per_100_wbc", "Per 100 WBC (non-leukocytes, e.g. erythroblasts)"
        PLATELETS = "platelets", "Platelet estimate, 10^9/L (code 'platelets')"

    name = models.CharField(max_length=80)
    codes = models.CharField(max_length=200, help_text="Class code(s), joined with '+' to sum.")
    measure = models.CharField(max_length=12, choices=Measure.choices, default=Measure.PERCENT)
    low = models.FloatField(null=True, blank=True)
    high = models.FloatField(null=True, blank=True)
    flag_low = models.CharField(max_length=80, blank=True)
    flag_high = models.CharField(max_length=80, blank=True)
    active = models.BooleanField(default=True)
    display_order = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["display_order", "id"]

    def __str__(self):
        return f"{self.name} ({self.get_measure_display()})"

    @property
    def code_list(self) -> list[str]:
        return [c.strip() for c in self.codes.split("+") if c.strip()]


from .morphology.models import RedCellGrade  # noqa: E402,F401  (red-cell morphology: its own package)
