"""The second factor (TOTP, django-otp): enrolment with a QR code, recovery codes (django-otp's static
device), verification at sign-in, a lab admin's reset. Writes are audited; tokens are never stored in
the audit log."""
from __future__ import annotations

import base64

import qrcode
import qrcode.image.svg
from django.core.exceptions import ValidationError
from django.db import transaction
from django_otp import login as otp_login
from django_otp import match_token
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from annotations.audit import audit_record
from annotations.models import AuditAction
from leukoportal.roles import REVIEWER, has_role

from .models import AccessSettings

RECOVERY_CODES = 10


def otp_enrolled(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def otp_required(user, *, rules: AccessSettings | None = None) -> bool:
    """Must this user enrol a second factor? Reviewers and lab admins, when the lab requires it
    (``rules``: the lab's access settings where the caller has them already)."""
    return has_role(user, REVIEWER) and (rules or AccessSettings.current()).require_otp_for_signers


def otp_enrol_device(*, user) -> TOTPDevice:
    """The user's unconfirmed TOTP device (made once, shown until confirmed)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)


def otp_qr_data_uri(device: TOTPDevice) -> str:
    """The device's otpauth:// URI as an SVG QR code, inline (no request to any other site)."""
    svg = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage).to_string()
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def otp_secret_base32(device: TOTPDevice) -> str:
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def otp_enrol_confirm(*, request, device: TOTPDevice, token: str) -> list[str]:
    """Confirm enrolment with a code from the app: the device is confirmed, the session verified,
    fresh recovery codes made (the previous ones no longer work); the codes, shown once."""
    if not device.verify_token(token.strip()):
        raise ValidationError({"token": "That code is not right (or has expired): enter the current one."})
    with transaction.atomic():
        TOTPDevice.objects.filter(user=device.user, confirmed=True).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        StaticDevice.objects.filter(user=device.user).delete()
        recovery = StaticDevice.objects.create(user=device.user, name="recovery codes")
        codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
        StaticToken.objects.bulk_create([StaticToken(device=recovery, token=c) for c in codes])
        audit_record(actor=device.user, action=AuditAction.OTP_ENROL, target=device.user,
                     after={"device": "totp", "recovery_codes": RECOVERY_CODES})
    otp_login(request, device)
    return codes


def otp_verify(*, request, token: str):
    """Verify the session with a code from the app or a recovery code (which is used up, audited)."""
    device = match_token(request.user, token.strip())
    if device is None:
        raise ValidationError({"token": "That code is not right (or has expired)."})
    otp_login(request, device)
    if isinstance(device, StaticDevice):
        audit_record(actor=request.user, action=AuditAction.OTP_RECOVERY_USED, target=request.user,
                     after={"left": device.token_set.count()})
    return device


def otp_reset(*, user, actor) -> None:
    """A lab admin removes a user's second factor (a lost phone): they enrol again at next sign-in."""
    with transaction.atomic():
        n = TOTPDevice.objects.filter(user=user).delete()[0] + StaticDevice.objects.filter(user=user).delete()[0]
        audit_record(actor=actor, action=AuditAction.OTP_RESET, target=user, after={"devices_removed": n})
