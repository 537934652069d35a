from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotations.audit import audit_record
from annotations.models import AuditAction

from .models import AccessSettings
from .selectors import directory_role_groups, sessions_of_user


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


def directory_role_sync(*, user, group_dns) -> str | None:
    """Give a directory user the highest role their groups map to, and no other (none when no group
    maps); audited when it changes. The user is saved by django-auth-ldap before this."""
    from django.contrib.auth.models import Group

    from leukoportal.roles import ROLES

    mapping, _ = directory_role_groups()
    roles = {mapping[dn.lower()] for dn in group_dns if dn.lower() in mapping}
    role = next((r for r in reversed(ROLES) if r in roles), None)
    with transaction.atomic():
        before = sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        after = [role] if role else []
        if before != after:
            user.groups.remove(*Group.objects.filter(name__in=ROLES))
            if role:
                user.groups.add(Group.objects.get(name=role))
            user.is_staff = role == "lab_admin"
            user.save(update_fields=["is_staff"])
            audit_record(actor=None, action=AuditAction.USER_DIRECTORY_ROLE, target=user,
                         before={"roles": before}, after={"roles": after, "source": "directory"})
    user._leukoportal_role = role
    return role


def directory_group_role_set(*, actor, group_dn: str, role: str | None):
    """Map a directory group to a role (or remove its mapping with role None); audited."""
    from .models import DirectoryGroupRole

    group_dn = group_dn.strip()
    if not group_dn:
        raise ValidationError({"group_dn": "Name the group by its DN."})
    with transaction.atomic():
        row = DirectoryGroupRole.objects.filter(group_dn__iexact=group_dn).first()
        before = {"group_dn": row.group_dn, "role": row.role} if row else None
        if role is None:
            if row:
                row.delete()
        elif row:
            row.role = role
            row.full_clean()
            row.save()
        else:
            row = DirectoryGroupRole(group_dn=group_dn, role=role)
            row.full_clean()
            row.save()
        audit_record(actor=actor, action=AuditAction.SETTINGS_DIRECTORY, target=("DirectoryGroupRole", group_dn[:64]),
                     before=before, after={"group_dn": group_dn, "role": role})
