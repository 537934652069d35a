"""The audit trail's one writer. It depends on the models only, so that every app may record an event
without importing another app's services."""
from __future__ import annotations

from .models import AuditAction, AuditEvent


def audit_record(*, actor, action: AuditAction | str, target, before=None, after=None) -> AuditEvent:
    """Record who did ``action`` to ``target`` (a row, or a ``(type name, id)`` pair), with the state
    before and after. An anonymous or missing actor is stored as none (a system action). An action
    that is not an :class:`AuditAction` is refused (ValueError), before anything is written."""
    action = AuditAction(action)
    if isinstance(target, tuple):
        target_type, target_id = target
    else:
        target_type, target_id = type(target).__name__, str(target.pk)
    return AuditEvent.objects.create(
        actor=actor if (actor is not None and actor.is_authenticated) else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        before=before,
        after=after,
    )
