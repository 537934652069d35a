"""Reads of the sources (no other app imported: every app may ask here)."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet

from .models import Source, default_source_id


def sources_list(*, active: bool | None = None) -> QuerySet[Source]:
    qs = Source.objects.all()
    if active is not None:
        qs = qs.filter(active=active)
    return qs


def source_default() -> Source:
    return Source.objects.get(pk=default_source_id())


def source_resolve(*, value, field: str = "acquisition_source") -> Source:
    """The source an upload or a new slide comes from: ``value`` is a Source, its id, or its name (any
    case); empty means the lab's default source. An unknown or inactive source is refused with a
    ValidationError on ``field`` that names the active sources."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return source_default()
    if isinstance(value, Source):
        source = Source.objects.filter(pk=value.pk).first()
    elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        source = Source.objects.filter(pk=int(value)).first()
    else:
        source = Source.objects.filter(name__iexact=str(value).strip()).first()
    if source is None or not source.active:
        names = ", ".join(sources_list(active=True).values_list("name", flat=True)) or "none"
        what = "is inactive" if source is not None else "is unknown"
        raise ValidationError({field: f"The source {str(value).strip()!r} {what}; active sources: {names}."})
    return source


def sources_with_counts() -> list[Source]:
    """Every source with how many cell images (``n_images``) and slides (``n_slides``) come from it."""
    images = dict(Source.objects.annotate(n=Count("cell_images")).values_list("pk", "n"))
    slides = dict(Source.objects.annotate(n=Count("slides")).values_list("pk", "n"))
    rows = list(Source.objects.all())
    for s in rows:
        s.n_images, s.n_slides = images.get(s.pk, 0), slides.get(s.pk, 0)
    return rows
