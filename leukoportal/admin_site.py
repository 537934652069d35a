from functools import wraps

from django.contrib.admin import AdminSite, ModelAdmin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from annotations.audit import audit_record
from annotations.models import AuditAction

from .roles import LAB_ADMIN, has_role


class AuditedAdminMixin:
    """Every add, change and delete made in the Django admin is also an audit event (who, what, when)."""

    def _audit(self, request, obj, action: str, message=None):
        audit_record(actor=request.user, action=AuditAction(f"admin.{action}"), target=(obj._meta.label, obj.pk),
                     after={"object": str(obj)[:200], "change": message or None})

    def log_addition(self, request, obj, message):
        self._audit(request, obj, "add", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, obj, "change", message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, obj, "delete")
        return super().log_deletions(request, queryset)


class LabAdminSite(AdminSite):
    """The Django admin, for lab admins only; everyone signs in on the portal's own login page."""

    site_header = "LeukoPortal administration"
    site_title = "LeukoPortal admin"
    refusal = "The Django admin is for lab admins with a staff account."

    def has_permission(self, request):
        return request.user.is_active and request.user.is_staff and has_role(request.user, LAB_ADMIN)

    def admin_view(self, view, cacheable=False):
        """A signed-in user who is not a staff lab admin gets the site's 403 page, not a login form."""
        inner = super().admin_view(view, cacheable)

        @wraps(inner)
        def wrapped(request, *args, **kwargs):
            if request.user.is_authenticated and not self.has_permission(request):
                raise PermissionDenied(self.refusal)
            return inner(request, *args, **kwargs)

        return wrapped

    def login(self, request, extra_context=None):
        if request.user.is_authenticated and not self.has_permission(request):
            raise PermissionDenied(self.refusal)
        return redirect_to_login(request.get_full_path())

    def register(self, model_or_iterable, admin_class=None, **options):
        """Every ModelAdmin registered here (ours or a library's) writes the audit trail."""
        admin_class = admin_class or ModelAdmin
        if not issubclass(admin_class, AuditedAdminMixin):
            admin_class = type(admin_class.__name__, (AuditedAdminMixin, admin_class), {"__module__": admin_class.__module__})
        return super().register(model_or_iterable, admin_class, **options)
