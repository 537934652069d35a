"""A URL whose methods are served by different views (leukoportal.api_routing.by_method)."""
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from annotations.api import LabSettingsApi, LabSettingsUpdateApi
from leukoportal.api_routing import by_method
from slides.api import SlideListApi

URL = "/api/lab-settings/"
RULES = {"labels_required_train": 2, "labels_required_heldout": 3, "blind_heldout": True, "slides_train": False,
         "two_step_release": False}


def test_each_method_reaches_its_own_view(client, lab_admin):
    client.force_login(lab_admin)
    assert client.post(URL, RULES, content_type="application/json").json() == RULES
    assert client.get(URL).json() == RULES
    assert client.head(URL).status_code == 200


def test_other_methods_are_405_with_every_method_of_the_url_allowed(client, lab_admin):
    client.force_login(lab_admin)
    for method in ("put", "patch", "delete"):
        response = getattr(client, method)(URL, "{}", content_type="application/json")
        assert response.status_code == 405 and response.json()["detail"]
        assert response["Allow"] == "GET, POST, HEAD, OPTIONS"


def test_options_lists_every_method_and_describes_the_writing_view(client, lab_admin):
    client.force_login(lab_admin)
    response = client.options(URL)
    assert response.status_code == 200 and response["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert response.json()["name"] == "Lab Settings Update Api"


def test_every_method_checks_the_role_itself(client, labeller):
    assert Client().get(URL).status_code in (401, 403)
    assert Client().post(URL, RULES, content_type="application/json").status_code in (401, 403)
    client.force_login(labeller)
    assert client.get(URL).status_code == 403
    assert client.post(URL, RULES, content_type="application/json").status_code == 403


def test_session_posts_need_the_csrf_token_and_token_posts_do_not(lab_admin):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(lab_admin)
    assert browser.post(URL, RULES, content_type="application/json").status_code == 403
    token = Token.objects.create(user=lab_admin)
    script = Client(enforce_csrf_checks=True)
    response = script.post(URL, RULES, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200


def test_the_url_reports_its_views_role_and_methods():
    view_class = resolve(URL).func.cls
    assert view_class.permission_classes == LabSettingsApi.permission_classes
    assert hasattr(view_class, "get") and hasattr(view_class, "post") and not hasattr(view_class, "put")


def test_views_with_different_roles_cannot_share_a_url():
    with pytest.raises(ImproperlyConfigured, match="one role"):
        by_method(get=SlideListApi, post=LabSettingsUpdateApi)


def test_the_schema_documents_each_method_with_its_own_view():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    images = schema["paths"]["/api/images/"]
    assert images["get"]["operationId"] == "images_list" and "page" in {p["name"] for p in images["get"]["parameters"]}
    assert images["post"]["operationId"] == "images_create"
    assert images["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].endswith(
        "/ImageListCreateInputRequest")
    assert set(images["post"]["responses"]) == {"200", "201"}
    settings = schema["paths"][URL]
    assert settings["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LabSettingsInput")
    assert settings["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LabSettingsInputRequest")
