from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotations.audit import audit_record
from annotations.models import AuditAction

from .models import AccessSettings
from .selectors import sessions_of_user


_SETTINGS = ("idle_timeout_minutes", "idle_warning_minutes", "require_otp_for_signers")


def access_settings_update(*, actor, idle_timeout_minutes: int, idle_warning_minutes: int,
                           require_otp_for_signers: bool | None = None) -> AccessSettings:
    """Set the lab's idle timeout, its warning and whether signers need a second factor (audited); a
    bad pair is refused and nothing changes. ``require_otp_for_signers`` None leaves it as it is."""
    with transaction.atomic():
        row = AccessSettings.objects.select_for_update().get(pk=AccessSettings.get().pk)
        before = {k: getattr(row, k) for k in _SETTINGS}
        row.idle_timeout_minutes, row.idle_warning_minutes = idle_timeout_minutes, idle_warning_minutes
        if require_otp_for_signers is not None:
            row.require_otp_for_signers = require_otp_for_signers
        row.full_clean()
        row.save()
        audit_record(actor=actor, action=AuditAction.SETTINGS_ACCESS, target=row, before=before,
                     after={k: getattr(row, k) for k in _SETTINGS})
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
