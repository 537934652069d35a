"""Refusals and missing pages answer in the site's layout with the reason and a way back; the Django
admin refuses signed-in non-admins with that page; the schema refuses anonymous users in JSON; the
favicon is served."""
import pytest
from django.test import Client
from django.urls import path

from leukoportal.urls import urlpatterns as site_patterns

LAYOUT = '<header class="topbar">'


def test_403_page_is_in_the_layout_with_the_reason_and_a_way_back(client, labeller):
    client.force_login(labeller)
    r = client.get("/audit/")
    html = r.content.decode()
    assert r.status_code == 403
    assert LAYOUT in html and 'id="error-403"' in html
    assert "This page needs the lab_admin role." in html
    assert "signed in as <strong>lab1</strong> (labeller)" in html
    assert 'href="/">Back to the start page</a>' in html


def test_404_page_is_in_the_layout_and_names_the_path(client, labeller):
    client.force_login(labeller)
    r = client.get("/no-such-page/")
    html = r.content.decode()
    assert r.status_code == 404
    assert LAYOUT in html and 'id="error-404"' in html and "/no-such-page/" in html
    assert "Back to the start page" in html
    assert "URLconf" not in html and "Using the URLconf" not in html  # never Django's debug page
    r = client.get("/images/999999/")
    assert r.status_code == 404 and "No CellImage matches" in r.content.decode()


def _boom(request):
    raise RuntimeError("deliberate failure in a test view")


urlpatterns = [path("boom/", _boom)] + site_patterns


@pytest.mark.urls("tests.leukoportal.test_error_pages")
def test_500_page_is_in_the_layout(db):
    r = Client(raise_request_exception=False).get("/boom/")
    html = r.content.decode()
    assert r.status_code == 500
    assert LAYOUT in html and 'id="error-500"' in html and "Back to the start page" in html
    assert "deliberate failure" not in html  # no traceback for the visitor


def test_a_signed_in_non_admin_gets_the_403_page_for_the_django_admin(client, labeller, reviewer):
    for user in (labeller, reviewer):
        client.force_login(user)
        for url in ("/admin/", "/admin/auth/user/", "/admin/login/"):
            r = client.get(url)
            assert r.status_code == 403, url
            html = r.content.decode()
            assert LAYOUT in html and "The Django admin is for lab admins" in html
            assert 'name="password"' not in html  # not a login form


def test_anonymous_schema_request_answers_403_json(db):
    r = Client().get("/api/schema/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert r.status_code == 403
    assert r["Content-Type"] == "application/json"
    assert "Content-Disposition" not in r
    assert "credentials were not provided" in r.json()["detail"]


def test_signed_in_users_still_get_the_schema(client, labeller):
    client.force_login(labeller)
    r = client.get("/api/schema/")
    assert r.status_code == 200 and b"openapi" in r.content


def test_favicon_is_a_static_file_at_the_site_root(client, labeller):
    r = Client().get("/favicon.ico")
    assert r.status_code == 200
    assert r["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert b"".join(r.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    client.force_login(labeller)
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").content.decode()
