"""Writes of the sources: create, rename, describe, (de)activate, make the default. Lab admins only;
every change is audited (annotations.audit: hence this module's place above the apps, .importlinter)."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from annotations.audit import audit_record
from annotations.models import AuditAction
from leukoportal.roles import LAB_ADMIN, has_role

from .models import Source

NAME_MAX = Source._meta.get_field("name").max_length
DESCRIPTION_MAX = Source._meta.get_field("description").max_length


def _check_actor(actor) -> None:
    if not has_role(actor, LAB_ADMIN):
        raise PermissionDenied("Only a lab admin names the lab's sources.")


def _clean_name(name: str, *, exclude_pk: int | None = None) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError({"name": "Name the source (e.g. the microscope and its camera)."})
    if len(name) > NAME_MAX:
        raise ValidationError({"name": f"At most {NAME_MAX} characters."})
    if name.isdigit():
        raise ValidationError({"name": "A name needs a letter (a number alone reads as a source's id)."})
    if Source.objects.filter(name__iexact=name).exclude(pk=exclude_pk).exists():
        raise ValidationError({"name": f"A source named {name!r} exists already."})
    return name


def _clean_description(description: str) -> str:
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        raise ValidationError({"description": f"At most {DESCRIPTION_MAX} characters."})
    return description


def _state(source: Source) -> dict:
    return {"name": source.name, "description": source.description, "active": source.active,
            "is_default": source.is_default}


def source_create(*, actor, name: str, description: str = "") -> Source:
    """A new, active source. A new source's cells start referred (the model has never seen its images)
    until the cells its reviewers verify train a next model."""
    _check_actor(actor)
    with transaction.atomic():
        source = Source.objects.create(name=_clean_name(name), description=_clean_description(description),
                                       created_by=actor)
        audit_record(actor=actor, action=AuditAction.SOURCE_CREATE, target=source, after=_state(source))
    return source


def source_update(*, actor, source: Source, name: str | None = None, description: str | None = None,
                  active: bool | None = None, make_default: bool = False) -> Source:
    """Rename, describe, deactivate or reactivate a source, or make it the lab's default (None: unchanged).
    Its cells and slides keep pointing at it. The default source stays active: make another the default
    before deactivating it; only an active source becomes the default."""
    _check_actor(actor)
    with transaction.atomic():
        source = Source.objects.select_for_update().get(pk=source.pk)
        before = _state(source)
        if name is not None:
            source.name = _clean_name(name, exclude_pk=source.pk)
        if description is not None:
            source.description = _clean_description(description)
        if active is not None:
            source.active = bool(active)
        if not source.active and (source.is_default or make_default):
            raise ValidationError({"active": "The default source stays active: make another source the default "
                                             "first."})
        previous = None
        if make_default and not source.is_default:
            previous = Source.objects.select_for_update().filter(is_default=True).first()
            if previous is not None:
                Source.objects.filter(pk=previous.pk).update(is_default=False)
            source.is_default = True
        after = _state(source)
        if after == before:
            return source
        source.save(update_fields=["name", "description", "active", "is_default"])
        audit_record(actor=actor, action=AuditAction.SOURCE_UPDATE, target=source, before=before, after=after)
        if previous is not None:
            audit_record(actor=actor, action=AuditAction.SOURCE_UPDATE, target=previous,
                         before={"is_default": True}, after={"is_default": False})
    return source
