from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from annotations.models import LabSettings

from .ml.voting import default_min_agreement
from .models import ModelVersion, Prediction, TrainingRun


@dataclass(frozen=True)
class AppliedThreshold:
    """What a version applies to every cell it reads: below ``value`` (its confidence) a cell is
    referred to an expert for low confidence, and so is a vote on which fewer than
    ``min_agreement`` backbones agree."""

    value: float
    source: str  # "lab settings", "server setting", "validation" (fitted) or "default" (conservative)
    why: str  # where the threshold comes from, in words
    min_agreement: int
    n_backbones: int

    @property
    def text(self) -> str:
        return f"{self.value:.2f} ({self.why})"

    def as_dict(self) -> dict:
        return {"value": self.value, "source": self.source, "why": self.why, "min_agreement": self.min_agreement,
                "n_backbones": self.n_backbones}


def threshold_applied(version: ModelVersion, *, lab: LabSettings | None = None) -> AppliedThreshold:
    """The one home of "the threshold this version applies": the lab's own threshold when it set
    one (LabSettings, else the server's CLASSIFIER_THRESHOLD), else the version's (fitted on its
    validation cells, or the conservative default; never 0); the lab's agreement rule, else a
    strict majority. Classification, evaluation, the commands, the API and the pages all read it.
    ``lab``: the lab's settings when the caller has them (a list of versions reads them once)."""
    lab = lab or LabSettings.get()
    n_backbones = len(version.backbones or [])
    min_agreement = lab.min_agreement or default_min_agreement(max(n_backbones, 1))
    common = {"min_agreement": min_agreement, "n_backbones": n_backbones}
    if lab.abstain_threshold > 0:
        return AppliedThreshold(float(lab.abstain_threshold), "lab settings", "set in the lab's settings", **common)
    if settings.CLASSIFIER_THRESHOLD:
        return AppliedThreshold(float(settings.CLASSIFIER_THRESHOLD), "server setting",
                                "set by the server's CLASSIFIER_THRESHOLD", **common)
    return AppliedThreshold(float(version.default_threshold), version.threshold_source,
                            version.threshold_why or version.threshold_source, **common)


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_resolve(ref: str | int | None) -> ModelVersion:
    """'active', None or an id -> a ModelVersion; raises ModelVersion.DoesNotExist with a clear message."""
    if ref in (None, "", "active"):
        version = model_version_active()
        if version is None:
            raise ModelVersion.DoesNotExist(
                "No model version is active. Train one with `python manage.py train_ensemble --data DIR --activate`."
            )
        return version
    try:
        pk = int(ref)
    except (TypeError, ValueError):
        raise ModelVersion.DoesNotExist(f"{ref!r} is not a model version id or 'active'.") from None
    try:
        return ModelVersion.objects.get(pk=pk)
    except ModelVersion.DoesNotExist:
        raise ModelVersion.DoesNotExist(f"Model version {pk} does not exist.") from None


def model_version_switch_label(*, version: ModelVersion, active: ModelVersion | None) -> str:
    """What the button that activates ``version`` says: "Promote v5", "Activate v3 (newer)" or "Roll back to v2"."""
    if version.status == ModelVersion.Status.CANDIDATE or version.activated_at is None:
        return f"Promote v{version.pk}"
    if active is not None and version.pk > active.pk:
        return f"Activate v{version.pk} (newer)"
    return f"Roll back to v{version.pk}"


def training_runs_list() -> QuerySet[TrainingRun]:
    """Training runs, newest first, with their version and its gate decisions (which their status shows)."""
    return (TrainingRun.objects.select_related("model_version")
            .prefetch_related("model_version__gate_decisions").order_by("-id"))


def predictions_latest_for(image_ids) -> dict[int, Prediction]:
    """The active model's prediction for each image id (else the newest one)."""
    active = model_version_active()
    out: dict[int, Prediction] = {}
    rows = Prediction.objects.filter(image_id__in=list(image_ids)).order_by("image_id", "-id")
    for p in rows:
        if p.image_id not in out or (active and p.model_version_id == active.pk):
            out[p.image_id] = p
    return out


def training_run_current() -> TrainingRun | None:
    return TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]).first()
