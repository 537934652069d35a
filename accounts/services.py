from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotations.audit import audit_record
from annotations.models import AuditAction

from .models import AccessSettings
from .selectors import sessions_of_user


def access_settings_update(*, actor, idle_timeout_minutes: int, idle_warning_minutes: int) -> AccessSettings:
    """Set the lab's idle timeout and its warning (audited); a bad pair is refused and nothing changes."""
    with transaction.atomic():
        row = AccessSettings.objects.select_for_update().get(pk=AccessSettings.get().pk)
        before = {"idle_timeout_minutes": row.idle_timeout_minutes, "idle_warning_minutes": row.idle_warning_minutes}
        row.idle_timeout_minutes, row.idle_warning_minutes = idle_timeout_minutes, idle_warning_minutes
        row.full_clean()
        row.save()
        audit_record(actor=actor, action=AuditAction.SETTINGS_SESSIONS, target=row, before=before,
                     after={"idle_timeout_minutes": idle_timeout_minutes, "idle_warning_minutes": idle_warning_minutes})
    return row


def sessions_end_for_user(*, user, actor) -> dict:
    """Log ``user`` out everywhere: every browser session ends and the API token is revoked (audited)."""
    if actor is not None and actor.pk == user.pk:
        raise ValidationError("Log yourself out with 'Log out'; this ends another user's sessions.")
    with transaction.atomic():
        sessions = sessions_of_user(user=user)
        n_sessions = len(sessions)
        for s in sessions:
            s.delete()
        n_tokens, _ = Token.objects.filter(user=user).delete()
        result = {"sessions": n_sessions, "tokens": n_tokens}
        audit_record(actor=actor, action=AuditAction.SESSIONS_END, target=user, after=result)
    return result
