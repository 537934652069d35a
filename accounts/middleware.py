"""Sessions that end on a shared bench PC: the lab's idle timeout (accounts.models.AccessSettings).

Activity is what a person does: opening a page (a navigation) or saving something (any request but
GET/HEAD). A page's background polling (fetch GETs) does not keep a session alive, so a verification
screen left open on a bench PC still logs out. API requests with a token carry no session and are
not concerned (tokens expire on their own: API_TOKEN_TTL_HOURS)."""
import time

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from .otp import otp_enrolled, otp_required
from .selectors import access_settings_get

LAST_ACTIVITY = "leukoportal_last_activity"


def _is_activity(request) -> bool:
    if request.method not in ("GET", "HEAD"):
        return True
    return request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"


class IdleTimeoutMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not hasattr(request, "session"):
            return self.get_response(request)
        rules = access_settings_get()
        now = time.time()
        last = request.session.get(LAST_ACTIVITY)
        timeout_s = rules.idle_timeout_minutes * 60
        if last is not None and now - last > timeout_s:
            logout(request)
            if request.path.startswith("/api/") or request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
                return JsonResponse({"detail": "Logged out after inactivity."}, status=401)
            messages.info(request, f"You were logged out after {rules.idle_timeout_minutes} minutes without activity.")
            return redirect_to_login(request.get_full_path())
        if last is None or _is_activity(request):
            request.session[LAST_ACTIVITY] = now
        request.access_settings = rules
        request.idle_timeout_s = timeout_s
        request.idle_warning_s = rules.idle_warning_minutes * 60
        return self.get_response(request)


class SecondFactorMiddleware:
    """After django-otp's OTPMiddleware: a signed-in session that is not verified goes to the code page
    (users with an authenticator) or to enrolment (reviewers and lab admins where the lab requires a
    second factor) before anything else; the API answers 403 until then."""

    OPEN = ("/access/otp/", "/accounts/logout/", "/accounts/login/", "/static/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (user is None or not user.is_authenticated or user.is_verified()
                or request.path.startswith(self.OPEN)):
            return self.get_response(request)
        if otp_enrolled(user):
            target, why = "accounts:otp_verify", "Enter the code from your authenticator app."
        elif otp_required(user, rules=getattr(request, "access_settings", None)):
            target, why = "accounts:otp_enrol", "This lab requires a second factor for your role: set it up first."
        else:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": why}, status=403)
        return redirect(reverse(target) + "?" + urlencode({"next": request.get_full_path()}))
