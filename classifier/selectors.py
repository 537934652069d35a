from django.db.models import QuerySet

from .models import ModelVersion, Prediction, TrainingRun


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
