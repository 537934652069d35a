"""Every URL pattern, for anonymous and for each role: the expected status.

A view without a role check (role_required, RoleRequiredMixin or a role permission class) fails
this test, so a new page cannot ship open by accident.
"""
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from leukoportal.roles import LAB_ADMIN, LABELLER, REVIEWER, _RolePermission, has_role

PUBLIC = {"login", "logout", "admin:login", "admin:logout"}
SKIP_PREFIXES = ("static/", "media/", "__debug__")
# Allowed, but answer 403 to a request without their query parameters.
NEEDS_PARAMETERS = {"admin:autocomplete"}
RANK = {None: 0, LABELLER: 1, REVIEWER: 2, LAB_ADMIN: 3}


def walk(patterns, prefix="", namespace=None):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = p.namespace or namespace
            yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p, namespace


def required_role(pattern: URLPattern, namespace) -> str | None:
    cb = pattern.callback
    if namespace == "admin":
        return LAB_ADMIN
    role = getattr(cb, "required_role", None)
    if role:
        return role
    view_class = getattr(cb, "view_class", None) or getattr(cb, "cls", None)
    if view_class is not None:
        role = getattr(view_class, "required_role", None)
        if role and not issubclass(view_class, APIView):
            return role
        if issubclass(view_class, APIView):
            perms = getattr(view_class, "permission_classes", [])
            roles = [perm.role for perm in perms if isinstance(perm, type) and issubclass(perm, _RolePermission)]
            if roles:
                return max(roles, key=lambda r: RANK[r])
    return None


def fill(route: str, pk: int) -> str:
    route = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\/", "/")
    route = re.sub(r"<int:[^>]+>", str(pk), route)
    route = re.sub(r"<(?:str|slug):[^>]+>", "x", route)
    route = re.sub(r"<path:[^>]+>", "x", route)
    route = re.sub(r"<uuid:[^>]+>", "00000000-0000-0000-0000-000000000000", route)
    route = re.sub(r"\(\?P<[^>]+>[^)]*\)", str(pk), route)
    route = re.sub(r"<[a-z_]+>", str(pk), route)
    route = re.sub(r"[\^$?]", "", route)
    return "/" + route


def all_routes():
    seen = set()
    for route, pattern, ns in walk(get_resolver().url_patterns):
        if route.startswith(SKIP_PREFIXES):
            continue
        name = f"{ns}:{pattern.name}" if ns else pattern.name
        key = (route, name)
        if key in seen:
            continue
        seen.add(key)
        yield route, pattern, ns, name


def test_every_view_declares_a_role(db):
    missing = []
    for route, pattern, ns, name in all_routes():
        if name in PUBLIC:
            continue
        if required_role(pattern, ns) is None:
            missing.append(f"{route} ({name})")
    assert not missing, "views without a role check: " + ", ".join(missing)


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and "/accounts/login/" in response.headers.get("Location", "")


def test_role_matrix_on_every_url(client, users_by_role, sample_pk):
    failures = []
    checked = 0
    for route, pattern, ns, name in all_routes():
        if name in PUBLIC:
            continue
        role = required_role(pattern, ns)
        url = fill(route, sample_pk)
        is_api = route.startswith("api/")
        for who, user in users_by_role.items():
            client.logout()
            if user is not None:
                client.force_login(user)
            allowed = user is not None and has_role(user, role)
            for method in ("get", "post") if not allowed else ("get",):
                response = getattr(client, method)(url)
                checked += 1
                code = response.status_code
                if ns == "admin" and user is None and code == 302:
                    final = getattr(client, method)(url, follow=True)
                    code = 302 if final.request["PATH_INFO"] == "/accounts/login/" else final.status_code
                    response = final if code != 302 else response
                if allowed and name in NEEDS_PARAMETERS:
                    ok = code in (200, 400, 403, 404)
                elif allowed:
                    ok = code not in (401, 403, 500) and not _is_login_redirect(response)
                elif user is None and ns == "admin":
                    ok = code == 302
                elif user is None:
                    ok = (code in (401, 403)) if is_api else _is_login_redirect(response)
                elif ns == "admin":
                    ok = code in (302, 403) and not (200 <= code < 300)
                else:
                    ok = code == 403
                if not ok:
                    failures.append(f"{method.upper()} {url} as {who} (needs {role}): {code}")
    assert checked > 50
    assert not failures, "\n".join(failures)


def test_anonymous_reaches_only_the_login_page(client, db):
    assert client.get("/accounts/login/").status_code == 200
    assert _is_login_redirect(client.get("/"))
    assert client.get("/api/images/").status_code in (401, 403)
