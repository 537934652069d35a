from django.contrib.admin import AdminSite
from django.contrib.auth.views import redirect_to_login

from .roles import LAB_ADMIN, has_role


class LabAdminSite(AdminSite):
    """The Django admin, for lab admins only; everyone signs in on the portal's own login page."""

    site_header = "LeukoPortal administration"
    site_title = "LeukoPortal admin"

    def has_permission(self, request):
        return request.user.is_active and request.user.is_staff and has_role(request.user, LAB_ADMIN)

    def login(self, request, extra_context=None):
        return redirect_to_login(request.get_full_path())
