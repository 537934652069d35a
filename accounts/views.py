"""The lab admin's page of sessions and sign-in: the idle timeout, and logging a user out everywhere."""
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from leukoportal.forms import form_save
from leukoportal.roles import LAB_ADMIN, LABELLER, role_required

from . import otp, selectors, services
from .forms import AccessSettingsForm, OtpTokenForm


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def access(request):
    form = AccessSettingsForm(request.POST or None, instance=selectors.access_settings_get())
    if request.method == "POST":
        if form.is_valid() and form_save(form, lambda: services.access_settings_update(
                actor=request.user, idle_timeout_minutes=form.cleaned_data["idle_timeout_minutes"],
                idle_warning_minutes=form.cleaned_data["idle_warning_minutes"],
                require_otp_for_signers=form.cleaned_data["require_otp_for_signers"])):
            messages.success(request, "Session settings saved.")
            return redirect("accounts:access")
    mapping, mapping_source = selectors.directory_role_groups()
    return render(request, "accounts/access.html", {
        "form": form, "users": selectors.users_with_session_counts(), "directory_on": bool(settings.AUTH_LDAP_SERVER_URI),
        "mapping": sorted(mapping.items()), "mapping_source": mapping_source,
    }, status=400 if request.method == "POST" else 200)


@role_required(LAB_ADMIN)
@require_POST
def logout_everywhere(request, pk: int):
    user = get_object_or_404(get_user_model(), pk=pk)
    try:
        result = services.sessions_end_for_user(user=user, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("accounts:access")
    messages.success(request, f"{user.get_username()} is logged out everywhere ({result['sessions']} session(s) "
                              f"ended, {result['tokens']} API token(s) revoked).")
    return redirect("accounts:access")


@role_required(LABELLER)
@require_POST
def keepalive(request):
    """'Stay signed in' on the idle warning: a POST, hence activity (accounts.middleware)."""
    return HttpResponse(status=204)


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    ok = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return target if ok and target.startswith("/") else "/"


@role_required(LABELLER)
@require_http_methods(["GET", "POST"])
def otp_enrol(request):
    """Set up the authenticator: the QR code (and the secret, to type in), then its current code."""
    device = otp.otp_enrol_device(user=request.user)
    form = OtpTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        codes = form_save(form, lambda: otp.otp_enrol_confirm(request=request, device=device,
                                                              token=form.cleaned_data["token"]))
        if codes is not None:
            return render(request, "accounts/otp_recovery.html", {"codes": codes, "next": _next(request)})
    return render(request, "accounts/otp_enrol.html",
                  {"form": form, "qr": otp.otp_qr_data_uri(device), "secret": otp.otp_secret_base32(device),
                   "next": _next(request)}, status=400 if request.method == "POST" else 200)


@role_required(LABELLER)
@require_http_methods(["GET", "POST"])
def otp_verify(request):
    form = OtpTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if form_save(form, lambda: otp.otp_verify(request=request, token=form.cleaned_data["token"])):
            return redirect(_next(request))
    return render(request, "accounts/otp_verify.html", {"form": form, "next": _next(request)},
                  status=400 if request.method == "POST" else 200)


@role_required(LAB_ADMIN)
@require_POST
def otp_reset(request, pk: int):
    user = get_object_or_404(get_user_model(), pk=pk)
    otp.otp_reset(user=user, actor=request.user)
    messages.success(request, f"{user.get_username()}'s second factor is removed; they set it up at their next sign-in.")
    return redirect("accounts:access")


@role_required(LAB_ADMIN)
@require_POST
def directory_group_role(request):
    """Map a directory group to a role, or remove a mapping (role empty)."""
    if selectors.directory_role_groups()[1] == "environment":
        messages.error(request, "The environment sets the directory mapping (LDAP_GROUP_* variables).")
        return redirect("accounts:access")
    role = request.POST.get("role") or None
    if role not in (None, "labeller", "reviewer", "lab_admin"):
        messages.error(request, f"Unknown role {role!r}.")
        return redirect("accounts:access")
    try:
        services.directory_group_role_set(actor=request.user, group_dn=request.POST.get("group_dn", ""), role=role)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("accounts:access")
    messages.success(request, "Directory mapping saved.")
    return redirect("accounts:access")
