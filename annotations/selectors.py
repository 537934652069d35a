from django.db.models import Count, Q, QuerySet

from .models import AuditEvent, CellClass, CellImage


def cell_classes_active() -> QuerySet[CellClass]:
    return CellClass.objects.filter(active=True).order_by("display_order", "code")


def images_list(*, split: str | None = None, labelled: bool | None = None, source: str | None = None) -> QuerySet[CellImage]:
    qs = CellImage.objects.select_related("final_label").order_by("-id")
    if split:
        qs = qs.filter(split=split)
    if source:
        qs = qs.filter(source=source)
    if labelled is True:
        qs = qs.filter(final_label__isnull=False)
    elif labelled is False:
        qs = qs.filter(final_label__isnull=True)
    return qs


def image_history(*, image: CellImage) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(target_type="CellImage", target_id=str(image.pk)).select_related("actor").order_by("id")


def dashboard_counts() -> dict:
    agg = CellImage.objects.aggregate(
        total=Count("id"),
        train=Count("id", filter=Q(split="train")),
        heldout=Count("id", filter=Q(split="heldout")),
        labelled=Count("id", filter=Q(final_label__isnull=False)),
        review=Count("id", filter=Q(needs_review=True)),
    )
    return agg
