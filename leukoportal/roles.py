"""The three roles of a lab and the checks every page and API endpoint uses.

Roles are Django groups and nest: a lab admin can do everything a reviewer can, a reviewer
everything a labeller can. A superuser counts as a lab admin.
"""
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

LABELLER = "labeller"
REVIEWER = "reviewer"
LAB_ADMIN = "lab_admin"
ROLES = (LABELLER, REVIEWER, LAB_ADMIN)
_RANK = {LABELLER: 1, REVIEWER: 2, LAB_ADMIN: 3}


def role_of(user) -> str | None:
    """The highest role the user holds, or None."""
    if not user or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return LAB_ADMIN
    cached = getattr(user, "_leukoportal_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.values_list("name", flat=True))
    role = None
    for candidate in ROLES:
        if candidate in names:
            role = candidate
    user._leukoportal_role = role
    return role


def has_role(user, required: str) -> bool:
    role = role_of(user)
    return role is not None and _RANK[role] >= _RANK[required]


def role_required(required: str):
    """Decorator for function views: anonymous -> login page, too low a role -> 403."""
    if required not in _RANK:
        raise ValueError(f"unknown role {required!r}")

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, required):
                raise PermissionDenied(f"This page needs the {required} role.")
            return view(request, *args, **kwargs)

        wrapped.required_role = required
        return wrapped

    return decorator


class RoleRequiredMixin:
    """Class-based views: set ``required_role``."""

    required_role: str = LAB_ADMIN

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not has_role(request.user, self.required_role):
            raise PermissionDenied(f"This page needs the {self.required_role} role.")
        return super().dispatch(request, *args, **kwargs)


class _RolePermission(BasePermission):
    role = LAB_ADMIN
    message = "Your role does not allow this."

    def has_permission(self, request, view):
        return has_role(request.user, self.role)


class IsLabeller(_RolePermission):
    role = LABELLER
    message = "This needs the labeller role or higher."


class IsReviewer(_RolePermission):
    role = REVIEWER
    message = "This needs the reviewer role or higher."


class IsLabAdmin(_RolePermission):
    role = LAB_ADMIN
    message = "This needs the lab admin role."


def roles_context(request):
    user = getattr(request, "user", None)
    role = role_of(user)
    return {
        "user_role": role,
        "is_labeller": role is not None,
        "is_reviewer": role in (REVIEWER, LAB_ADMIN),
        "is_lab_admin": role == LAB_ADMIN,
    }


class LabAdminPermissionBackend:
    """Lab admins hold every model permission in the Django admin; nobody else gets any from here."""

    def authenticate(self, request, **credentials):
        return None

    def has_perm(self, user_obj, perm, obj=None):
        return has_role(user_obj, LAB_ADMIN) and user_obj.is_staff

    def has_module_perms(self, user_obj, app_label):
        return has_role(user_obj, LAB_ADMIN) and user_obj.is_staff
