from django.conf import settings
from django.db import models
from django.db.models import Q

from competency.exam import exam_hides
from leukoportal.roles import REVIEWER, has_role
from sources.models import default_source_id


class CellClass(models.Model):
    """One entry of the lab's taxonomy. Never deleted: deactivate instead, past labels keep it."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    hotkey = models.CharField(max_length=1, blank=True)
    display_order = models.PositiveIntegerField(default=100)
    active = models.BooleanField(default=True)
    is_abstain = models.BooleanField(default=False, help_text="The 'unidentified' class the model abstains to.")
    is_leukocyte = models.BooleanField(
        default=True, help_text="Counted in a differential (smudge cells, artefacts and platelets are not)."
    )

    class Meta:
        ordering = ["display_order", "code"]
        verbose_name_plural = "cell classes"

    def __str__(self):
        return self.name


class Split(models.TextChoices):
    TRAIN = "train", "Training"
    HELDOUT = "heldout", "Held-out (locked)"


class Source(models.TextChoices):
    CELL = "cell", "Cell crop"
    FIELD = "field", "Slide field"
    SLIDE_CELL = "slide_cell", "Cell found in a slide field"


class UploadBatch(models.Model):
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    channel = models.CharField(max_length=10, choices=[("browser", "browser"), ("api", "API"), ("cli", "CLI")])
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    sample_code = models.CharField(max_length=40, blank=True)
    stored = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]


class CellImage(models.Model):
    """A de-identified image: pixels only, stored under the sha256 of the stored bytes."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(upload_to="images/", max_length=200)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_format = models.CharField(max_length=10)
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.CELL)
    acquisition_source = models.ForeignKey(
        "sources.Source", on_delete=models.PROTECT, default=default_source_id, related_name="cell_images",
        verbose_name="source", help_text="The microscope/camera the image comes from (sources.Source); not to be "
                                         "confused with ``source``, what kind of image it is.")
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN, db_index=True)
    sample_code = models.CharField(max_length=40, blank=True, help_text="De-identified sample code, optional.")
    batch = models.ForeignKey(UploadBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="images")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    final_label = models.ForeignKey(
        CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="final_images"
    )
    final_label_at = models.DateTimeField(null=True, blank=True)
    needs_review = models.BooleanField(default=False, db_index=True)
    current_label_count = models.PositiveSmallIntegerField(
        default=0, help_text="Experts whose current label this image has (kept by the label services)."
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["split", "final_label"]),
            models.Index(
                fields=["split", "current_label_count", "id"],
                condition=Q(final_label__isnull=True, needs_review=False),
                name="awaiting_readers",
            ),
        ]

    def __str__(self):
        return f"image {self.pk} ({self.sha256[:12]})"


class Label(models.Model):
    """One expert's reading of one image. Append-only: a change supersedes, never deletes."""

    image = models.ForeignKey(CellImage, on_delete=models.CASCADE, related_name="labels")
    labeller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="labels")
    cell_class = models.ForeignKey(CellClass, on_delete=models.PROTECT, related_name="labels")
    unsure = models.BooleanField(default=False)
    suggested_class = models.ForeignKey(
        CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    suggestion_model_version = models.ForeignKey(
        "classifier.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    suggestion_referred = models.BooleanField(
        default=False, help_text="The model referred the cell to an expert: the suggested class was its best "
                                 "guess, not a call it accepted.")
    created_at = models.DateTimeField(auto_now_add=True)
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "labeller"], condition=Q(superseded_at__isnull=True), name="one_current_label_per_expert"
            )
        ]

    @property
    def confirmed_suggestion(self) -> bool | None:
        """The expert's class is the class the model suggested (its call, or where it referred the
        cell its best guess: see :attr:`suggestion_referred`); None where nothing was suggested."""
        if self.suggested_class_id is None:
            return None
        return self.suggested_class_id == self.cell_class_id

    @property
    def confirmed_model_call(self) -> bool:
        """The expert confirmed a call the model accepted (never a referred cell's best guess)."""
        return bool(self.confirmed_suggestion) and not self.suggestion_referred


class Adjudication(models.Model):
    """A reviewer's final decision on a disputed image."""

    image = models.ForeignKey(CellImage, on_delete=models.CASCADE, related_name="adjudications")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    cell_class = models.ForeignKey(CellClass, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class AuditAction(models.TextChoices):
    """Every kind of audit event (``audit_record`` refuses any other). The column stays free text (no
    choices, hence no migration): rows written before a kind is renamed or retired stay readable."""

    IMAGE_UPLOAD = "image.upload", "Image uploaded"
    IMAGE_IMPORT = "image.import", "Image imported"
    IMAGE_SPLIT_MOVE = "image.split_move", "Image moved to another split"
    IMAGE_FINAL_LABEL = "image.final_label", "Final label set"
    BATCH_UPLOAD = "batch.upload", "Batch uploaded"
    ARCHIVE_REFUSED = "batch.archive_refused", "Archive upload refused"
    BATCH_IMPORT = "batch.import", "Batch imported"
    CELLS_IMPORT = "cells.import", "Cells imported"
    CELLS_IMPORT_REFUSED = "cells.import_refused", "Cell import refused"
    CELLS_EXPORT = "cells.export", "Cells exported"
    SLIDES_EXPORT = "slides.export", "Slides exported"
    LABEL_CREATE = "label.create", "Label given"
    LABEL_CHANGE = "label.change", "Label changed"
    LABEL_WITHDRAW = "label.withdraw", "Label withdrawn"
    LABEL_ADJUDICATE = "label.adjudicate", "Adjudicated"
    TAXONOMY_SAVE = "taxonomy.save", "Cell class saved"
    USER_CREATE_READER = "user.create_reader", "Reader account created"
    SETTINGS_LABELLING = "settings.labelling", "Labelling settings changed"
    SETTINGS_PROMOTION_GATE = "settings.promotion_gate", "Promotion gate settings changed"
    SCHEDULE_RETRAIN = "schedule.retrain", "Retraining schedule changed"
    TRAINING_START = "training.start", "Training started"
    TRAINING_CANCEL = "training.cancel", "Training cancelled"
    TRAINING_FAILED = "training.failed", "Training failed"
    WEIGHTS_IMPORT = "weights.import", "Weights imported"
    EVALUATION_REQUEST = "evaluation.request", "Evaluation requested"
    MODEL_TRAINED = "model.trained", "Model version trained"
    MODEL_GATE = "model.gate", "Promotion gate decided"
    MODEL_PROMOTION = "model.promotion", "Model version activated"
    MODEL_PROMOTION_CLI = "model.promotion_cli", "Model version activated (command line)"
    MODEL_PROMOTE = "model.promote", "Model version promoted"
    MODEL_ROLLBACK = "model.rollback", "Model version rolled back"
    MODEL_REACTIVATE = "model.reactivate", "Model version reactivated"
    SOURCE_CREATE = "source.create", "Source created"
    SOURCE_UPDATE = "source.update", "Source changed"
    SLIDE_CREATE = "slide.create", "Slide created"
    SLIDE_UPDATE = "slide.update", "Slide updated"
    SLIDE_IMAGES_ADD = "slide.images_add", "Slide fields added"
    SLIDE_PROCESSED = "slide.processed", "Slide processed"
    SLIDE_PROCESS_FAILED = "slide.process_failed", "Slide processing failed"
    SLIDE_PROCESS_RESUMED = "slide.process_resumed", "Slide processing resumed"
    SLIDE_RETRY = "slide.retry", "Slide processing retried"
    SLIDE_CELL_RECLASSIFY = "slide.cell_reclassify", "Slide cell reclassified"
    SLIDE_CELL_VERIFY = "slide.cell_verify", "Slide cells verified"
    SLIDE_SIGN = "slide.sign", "Slide signed"
    SLIDE_SUBMIT = "slide.submit", "Slide submitted for release"
    SLIDE_RELEASE = "slide.release", "Slide released (two-step)"
    SLIDE_RELEASE_RETURN = "slide.release_return", "Submitted slide returned to verification"
    SLIDE_CORRECT = "slide.correct", "Slide corrected"
    SLIDE_CREATE_VERSION = "slide.create_version", "Slide version created"
    SLIDE_REFERENCE_INTERVAL = "slide.reference_interval", "Reference interval changed"
    SLIDE_PLATELETS_CORRECT = "slide.platelets_correct", "Platelet count of a field corrected"
    SETTINGS_PLATELETS = "settings.platelets", "Platelet estimate settings changed"
    SLIDE_RED_CELLS_GRADE = "slide.red_cells_grade", "Red-cell morphology graded"
    COMPETENCY_TEST_CREATE = "competency.test_create", "Proficiency test built"
    COMPETENCY_TEST_FREEZE = "competency.test_freeze", "Proficiency test frozen"
    COMPETENCY_ASSIGN = "competency.assign", "Proficiency test assigned"
    COMPETENCY_START = "competency.start", "Proficiency test started"
    COMPETENCY_ANSWER = "competency.answer", "Proficiency test answer saved"
    COMPETENCY_SUBMIT = "competency.submit", "Proficiency test submitted"
    COMPETENCY_SIGN_OFF = "competency.sign_off", "Proficiency test record signed off"
    COMPETENCY_MODEL_SIT = "competency.model_sit", "Model version sat a proficiency test"
    COMPETENCY_EXPORT = "competency.export", "Proficiency results exported"
    LIS_DESTINATION_CREATE = "lis.destination_create", "LIS destination added"
    LIS_DESTINATION_UPDATE = "lis.destination_update", "LIS destination changed"
    LIS_RESEND = "lis.resend", "LIS message sent again"
    LIS_ORDER_RECEIVE = "lis.order_receive", "LIS order received"
    LIS_ORDER_CANCEL = "lis.order_cancel", "LIS order cancelled"
    ADMIN_ADD = "admin.add", "Added in the admin"
    ADMIN_CHANGE = "admin.change", "Changed in the admin"
    ADMIN_DELETE = "admin.delete", "Deleted in the admin"
    BACKUP_CREATE = "backup.create", "Backup written"
    BACKUP_FAILED = "backup.failed", "Backup failed"
    BACKUP_RESTORE = "backup.restore", "Restored from a backup"
    SESSIONS_END = "sessions.end", "Logged out everywhere"
    SETTINGS_ACCESS = "settings.access", "Sign-in and session settings changed"
    OTP_ENROL = "otp.enrol", "Second factor enrolled"
    OTP_RECOVERY_USED = "otp.recovery_used", "Recovery code used"
    OTP_RESET = "otp.reset", "Second factor reset"
    USER_DIRECTORY_ROLE = "user.directory_role", "Role set from the directory"
    SETTINGS_DIRECTORY = "settings.directory", "Directory group mapped to a role"


class AuditEvent(models.Model):
    """Who did what, to what, with the state before and after. Never edited, never deleted."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=40, db_index=True)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.target_type}:{self.target_id}"


class LabSettings(models.Model):
    """The lab's settings (one row)."""

    labels_required_train = models.PositiveSmallIntegerField(default=1)
    labels_required_heldout = models.PositiveSmallIntegerField(default=2)
    blind_heldout = models.BooleanField(default=True, help_text="Hide model suggestions on held-out cells.")
    abstain_threshold = models.FloatField(
        default=0.0, help_text="Confidence under which a cell is 'unidentified'; 0 uses the model's calibrated default."
    )
    min_agreement = models.PositiveSmallIntegerField(
        default=0, help_text="Backbones that must agree; 0 means a strict majority."
    )
    retrain_min_new_labels = models.PositiveIntegerField(default=100)
    promotion_margin = models.FloatField(default=0.02, help_text="Largest allowed drop of any class's sensitivity.")
    slides_train = models.BooleanField(
        default=True,
        help_text="Cells verified on slides enter the next training snapshot (how the model adapts to this lab's "
                  "microscope and stain).",
    )
    gate_min_heldout_per_class = models.PositiveIntegerField(
        default=20, help_text="Held-out cells each class needs before the promotion gate decides on its own."
    )
    gate_min_heldout_total = models.PositiveIntegerField(
        default=200, help_text="Held-out cells in total the promotion gate needs before it decides on its own."
    )
    platelet_estimate = models.BooleanField(
        default=False, help_text="Report a platelet estimate (and red cells per field) from the smear fields.")
    # The platelet factor (platelets per camera field -> 10^9/L) has no default: it is set only by a
    # calibration against analyser counts (slides.platelets.services.platelet_calibration_save), with its
    # interval, the number of slides, when and by whom; the estimate cannot be turned on without it.
    platelet_factor = models.FloatField(
        null=True, blank=True,
        help_text="Platelets per camera field -> 10^9/L, calibrated against analyser counts (none until then).")
    platelet_factor_low = models.FloatField(null=True, blank=True, help_text="The factor's 95% interval, low.")
    platelet_factor_high = models.FloatField(null=True, blank=True, help_text="The factor's 95% interval, high.")
    platelet_factor_se = models.FloatField(null=True, blank=True, help_text="The factor's standard error.")
    platelet_calibration_n = models.PositiveIntegerField(null=True, blank=True,
                                                         help_text="Slides the factor was calibrated on.")
    platelet_calibration_pairs = models.JSONField(
        default=list, blank=True, help_text="The calibration's pairs: analyser count, mean platelets per field, source.")
    platelet_calibrated_at = models.DateTimeField(null=True, blank=True)
    platelet_calibrated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                               on_delete=models.PROTECT, related_name="+")

    two_step_release = models.BooleanField(
        default=False, help_text="Two-step release: a technologist verifies and submits a slide, a second user with "
                                 "the reviewer role releases (signs) it.")

    class Meta:
        verbose_name_plural = "lab settings"

    @classmethod
    def get(cls) -> "LabSettings":
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    def platelet_calibration(self) -> dict | None:
        """The platelet factor's calibration (factor, 95% interval, slides, standard error, when, by
        whom) as the estimate states it, or None while the factor is not calibrated."""
        if self.platelet_factor is None or self.platelet_calibrated_at is None:
            return None
        return {"factor": self.platelet_factor, "interval": [self.platelet_factor_low, self.platelet_factor_high],
                "n": self.platelet_calibration_n, "se": self.platelet_factor_se,
                "calibrated_at": self.platelet_calibrated_at.isoformat(),
                "calibrated_by": self.platelet_calibrated_by.get_username() if self.platelet_calibrated_by_id else None}

    def labels_required(self, split: str, source: str = Source.CELL) -> int:
        """Readings that make a final label. A cell found in a slide field is labelled by the
        reviewer who verifies it on the slide (one reading)."""
        if source == Source.SLIDE_CELL:
            return 1
        return self.labels_required_heldout if split == Split.HELDOUT else self.labels_required_train

    def final_label_decide(self, *, split: str, source: str, readings, adjudicated=None) -> tuple[object, bool]:
        """The lab's rule for a cell's final label: ``(final class or None, needs review)``. Every channel
        that records readings (the labelling page and API, slide verification, the imports) decides a
        cell's final label here, so a final label follows the lab's rule whatever the channel.

        ``readings``: the current readings as ``(class, unsure)`` pairs; ``adjudicated``: the class a
        reviewer decided, if any (it is final). Until the required number of experts have read the cell
        nothing is decided, not even a dispute: a first reader's "not sure" or a first disagreement
        leaves the cell to the next reader. Then agreement of all, none unsure, makes the final label;
        anything else goes to a reviewer."""
        if adjudicated is not None:
            return adjudicated, False
        readings = list(readings)
        if not readings or len(readings) < self.labels_required(split, source=source):
            return None, False
        classes = {cell_class for cell_class, _ in readings}
        if len(classes) > 1 or any(unsure for _, unsure in readings):
            return None, True
        return readings[0][0], False

    # The blind held-out rule: every screen, API and selector that shows a model's call on a cell or
    # another expert's reading asks one of these methods (``image`` needs ``split`` and ``final_label_id``);
    # the queues that leave blind cells out filter with ``blind_cells``.
    def hides_model_call(self, *, image, user) -> bool:
        """Is the model's call on this cell (its class and its confidence) hidden from this reader?

        In blind mode a held-out cell is read without the model: nobody sees its call until the cell
        is decided (has a final label), so neither the experts reading it nor a reviewer adjudicating
        it is drawn toward the model; a labeller does not see it even then, since they may still
        change their own reading. Training cells always show it. A cell of a proficiency test open for
        this reader is hidden from them whatever their role (:func:`competency.exam.exam_hides`).
        """
        if exam_hides(user=user, image_id=image.pk):
            return True
        if not (self.blind_heldout and image.split == Split.HELDOUT):
            return False
        return self.reads_blind(image=image) or not has_role(user, REVIEWER)

    def reads_blind(self, *, image) -> bool:
        """Is the model's call on this cell hidden from every reader for now, reviewers included (an
        undecided held-out cell in blind mode)? What is made of the call before anyone reads it follows
        this: a slide's pre-classification refers such a cell to its verifier instead of counting it
        under the model's class."""
        return self.blind_heldout and image.split == Split.HELDOUT and image.final_label_id is None

    def blind_cells(self) -> Q:
        """The undecided cells read blind, as a filter for the queues that leave them out (the model's
        suggestions, others' 'not sure'): the held-out cells in blind mode; none otherwise."""
        return Q(split=Split.HELDOUT) if self.blind_heldout else Q()

    def hides_other_readings(self, *, image, user) -> bool:
        """Does this reader see only their own reading of this cell, not whether other experts agree
        (``needs_review``, "waiting for adjudication")? Labellers of blind held-out cells; reviewers
        adjudicate disputes, so they see them. A cell of a proficiency test open for this reader: nobody's
        reading, whatever their role."""
        if exam_hides(user=user, image_id=image.pk):
            return True
        return self.hides_model_call(image=image, user=user) and not has_role(user, REVIEWER)

    @staticmethod
    def hides_final_label(*, image, user) -> bool:
        """Is this cell's final (reference) label, and this reader's own earlier reading of it, hidden from
        them? Only while the cell is in a proficiency test open for them (the test's reference label)."""
        return exam_hides(user=user, image_id=image.pk)
