"""The image API's links are the portal's own routes."""
import io

from django.urls import resolve
from PIL import Image

from annotations.services import image_upload


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 60, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_listed_and_uploaded_images_link_to_their_file(client, labeller, lab_admin):
    stored = image_upload(data=_png(), uploaded_by=lab_admin, enqueue_classification=False).image
    client.force_login(labeller)
    listed = client.get("/api/images/").json()["results"][0]
    assert listed["id"] == stored.pk
    match = resolve(listed["file_url"])
    assert (match.url_name, match.kwargs) == ("api_image_file", {"pk": stored.pk})
    response = client.get(listed["file_url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    detail = client.get(f"/api/images/{stored.pk}/").json()
    assert detail["file_url"] == listed["file_url"]
