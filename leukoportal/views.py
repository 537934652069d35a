from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.shortcuts import render
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer

from annotations.selectors import dashboard_counts
from backup.selectors import backup_status
from classifier.selectors import model_version_active, training_run_current
from competency.selectors import assignments_open_of
from leukoportal.roles import LAB_ADMIN, LABELLER, has_role, role_required
from lis.selectors import delivery_alerts


def _client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "?")


class RateLimitedLoginView(auth_views.LoginView):
    """Django's login view, refusing more than LOGIN_RATE_LIMIT failures per user and address in 15 min."""

    public = True
    window_s = 15 * 60

    def _key(self) -> str:
        username = (self.request.POST.get("username") or "").strip().lower()[:150]
        return f"login-failures:{_client_ip(self.request)}:{username}"

    def post(self, request, *args, **kwargs):
        if cache.get(self._key(), 0) >= settings.LOGIN_RATE_LIMIT:
            form = self.get_form()
            form.errors.clear()
            response = self.render_to_response(
                self.get_context_data(form=form, locked=True)
            )
            response.status_code = 429
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key()
        cache.add(key, 0, self.window_s)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, self.window_s)
        return super().form_invalid(form)

    def form_valid(self, form):
        cache.delete(self._key())
        return super().form_valid(form)


@role_required(LABELLER)
def home(request):
    return render(
        request,
        "leukoportal/home.html",
        {"counts": dashboard_counts(), "active_model": model_version_active(), "training": training_run_current(),
         "open_tests": list(assignments_open_of(person=request.user)),
         # A result signed but not delivered is a patient-safety matter: lab admins see it first.
         "lis_alerts": delivery_alerts() if has_role(request.user, LAB_ADMIN) else None,
         "backup": backup_status() if has_role(request.user, LAB_ADMIN) else None},
    )


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema (YAML or JSON by content negotiation). A refusal is a JSON error like every
    other API answer, not a schema-typed file the browser would download."""

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response
