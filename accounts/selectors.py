from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.utils import timezone

from .models import AccessSettings


def access_settings_get() -> AccessSettings:
    return AccessSettings.current()


def sessions_of_user(*, user) -> list[Session]:
    """The unexpired database sessions signed in as ``user`` (each session decoded: a lab has few)."""
    pk = str(user.pk)
    return [s for s in Session.objects.filter(expire_date__gt=timezone.now())
            if s.get_decoded().get("_auth_user_id") == pk]


def users_with_session_counts() -> list:
    counts: dict[str, int] = {}
    for s in Session.objects.filter(expire_date__gt=timezone.now()):
        uid = s.get_decoded().get("_auth_user_id")
        if uid:
            counts[uid] = counts.get(uid, 0) + 1
    from django_otp.plugins.otp_totp.models import TOTPDevice

    enrolled = set(TOTPDevice.objects.filter(confirmed=True).values_list("user_id", flat=True))
    users = list(get_user_model().objects.filter(is_active=True).order_by("username"))
    for u in users:
        u.n_sessions = counts.get(str(u.pk), 0)
        u.otp_enrolled = u.pk in enrolled
    return users


def directory_role_groups() -> tuple[dict[str, str], str]:
    """The group DN -> role mapping in force (lowercase DNs) and where it comes from ("environment",
    "lab settings")."""
    from django.conf import settings

    from .models import DirectoryGroupRole

    from_env = getattr(settings, "LEUKO_LDAP_ROLE_GROUPS", {})
    if from_env:
        return {dn.lower(): role for role, dn in from_env.items()}, "environment"
    return {row.group_dn.lower(): row.role for row in DirectoryGroupRole.objects.all()}, "lab settings"
