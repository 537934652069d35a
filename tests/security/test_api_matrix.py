"""Every API endpoint x every HTTP method x every role (and anonymous, and an expired token).

Endpoints come from the URL resolver and the OpenAPI schema, so an endpoint added later is
covered without editing this file.
"""
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.views import APIView

from leukoportal.roles import has_role
from tests.helpers import png_bytes
from tests.leukoportal.test_access_matrix import all_routes, fill, required_role

METHODS = ("get", "post", "put", "patch", "delete")


def api_routes():
    for route, pattern, ns, name in all_routes():
        view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        if route.startswith("api/") and view_class is not None and issubclass(view_class, APIView):
            yield route, pattern, ns, name, view_class


def implemented(view_class) -> set[str]:
    return {m for m in METHODS if hasattr(view_class, m)}


def _call(client, method, url):
    if method in ("get", "delete"):
        return getattr(client, method)(url)
    return getattr(client, method)(url, data="{}", content_type="application/json")


def test_api_routes_are_found():
    routes = list(api_routes())
    assert len(routes) >= 10
    assert all(required_role(p, ns) for _, p, ns, _, _ in routes), "an API view without a role permission"


def test_every_api_endpoint_and_method_for_every_role(users_by_role, sample_pk):
    failures, checked = [], 0
    clients = {}
    for who, user in users_by_role.items():
        clients[who] = Client()
        if user is not None:
            clients[who].force_login(user)
    for route, pattern, ns, name, view_class in api_routes():
        role = required_role(pattern, ns)
        url = fill(route, sample_pk)
        methods = implemented(view_class)
        for who, user in users_by_role.items():
            allowed = user is not None and has_role(user, role)
            for method in METHODS:
                response = _call(clients[who], method, url)
                code = response.status_code
                checked += 1
                if user is None:
                    ok = code in (401, 403)
                elif not allowed:
                    ok = code == 403
                elif method not in methods:
                    ok = code == 405
                else:
                    ok = code not in (401, 403, 405) and code < 500
                if not ok:
                    failures.append(f"{method.upper()} {url} as {who} (needs {role}): {code}")
                elif code >= 400 and code != 405:
                    # JSON endpoints answer a JSON message; the schema/docs views answer in their own format
                    is_json = response.get("Content-Type", "").startswith("application/json")
                    if (is_json and not response.json()) or not response.content:
                        failures.append(f"{method.upper()} {url} as {who}: {code} without a message")
    assert checked >= 5 * 5 * 10
    assert not failures, "\n".join(failures)


def test_every_operation_in_the_openapi_schema_is_in_the_matrix():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    import re

    matrix = set()
    for route, pattern, ns, name, view_class in api_routes():
        shape = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        for method in implemented(view_class):
            matrix.add((re.sub(r"\{[^}]+\}", "{}", shape), method))
    operations = {(re.sub(r"\{[^}]+\}", "{}", path), method)
                  for path, item in schema["paths"].items() for method in item if method in METHODS}
    assert operations, "the schema lists no operations"
    assert operations <= matrix, sorted(operations - matrix)


def test_expired_token_is_refused_on_every_endpoint_and_a_fresh_one_works(labeller, settings, sample_pk):
    token = Token.objects.create(user=labeller)
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    assert client.get("/api/images/", **auth).status_code == 200
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(hours=settings.API_TOKEN_TTL_HOURS + 1))
    for route, pattern, ns, name, view_class in api_routes():
        r = client.get(fill(route, sample_pk), **auth)
        assert r.status_code in (401, 403), (route, r.status_code)
        if r["Content-Type"].startswith("application/json"):
            assert "expired" in r.json()["detail"]
    assert client.get("/api/images/", HTTP_AUTHORIZATION="Token not-a-real-token").status_code in (401, 403)


def test_token_of_a_deactivated_user_is_refused(labeller):
    token = Token.objects.create(user=labeller)
    labeller.is_active = False
    labeller.save()
    r = Client().get("/api/images/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert r.status_code in (401, 403) and "inactive" in r.json()["detail"]


def test_labeller_never_sees_another_experts_label(client, labeller, labeller2, lab_admin):
    """Blind labelling: the object-level rule of a single lab."""
    from annotations.models import CellClass, LabSettings
    from annotations.services import image_upload, label_submit

    LabSettings.objects.update_or_create(pk=1, defaults={"labels_required_train": 2})
    image = image_upload(data=png_bytes((9, 8, 7)), uploaded_by=lab_admin, enqueue_classification=False).image
    label_submit(image=image, labeller=labeller2, cell_class=CellClass.objects.get(code="monocyte"))
    client.force_login(labeller)
    seen = []
    for url in (f"/api/cells/{image.pk}/", "/api/queues/unlabelled/", "/api/queues/unsure/", f"/api/images/{image.pk}/",
                f"/label/cell/{image.pk}/", f"/images/{image.pk}/"):
        r = client.get(url)
        assert r.status_code in (200, 404), (url, r.status_code)
        seen.append(r.content.decode())
    text = "\n".join(seen)
    assert labeller2.username not in text
    assert client.get("/api/adjudications/").status_code == 403
    mine = client.get(f"/api/cells/{image.pk}/").json()["my_label"]
    assert mine is None
