"""The lab admin's page of sessions and sign-in: the idle timeout, and logging a user out everywhere."""
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from leukoportal.forms import form_save
from leukoportal.roles import LAB_ADMIN, LABELLER, role_required

from . import selectors, services
from .forms import AccessSettingsForm


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def access(request):
    form = AccessSettingsForm(request.POST or None, instance=selectors.access_settings_get())
    if request.method == "POST":
        if form.is_valid() and form_save(form, lambda: services.access_settings_update(
                actor=request.user, idle_timeout_minutes=form.cleaned_data["idle_timeout_minutes"],
                idle_warning_minutes=form.cleaned_data["idle_warning_minutes"])):
            messages.success(request, "Session settings saved.")
            return redirect("accounts:access")
    return render(request, "accounts/access.html", {"form": form, "users": selectors.users_with_session_counts()},
                  status=400 if request.method == "POST" else 200)


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
