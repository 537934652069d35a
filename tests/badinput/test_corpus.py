"""Every kind of bad input gets a clear 4xx with a message, nothing is half-stored, and planted
identifying text never reaches storage (database rows, audit trail or files)."""
import io
import json
import zipfile

import pytest
from PIL import Image

from annotations.models import AuditEvent, CellClass, CellImage, Label, UploadBatch
from annotations.services import image_upload
from tests.annotations.test_upload import planted_files
from tests.helpers import media_files, png_bytes

from .corpus import BAD_ARCHIVES, BAD_IMAGES, ODD_BUT_VALID_IMAGES, PLANTED, zip_entries_file, zip_with_raw_names

# Kinds exercised below that are not in the three dictionaries.
OTHER_KINDS = [
    "zip_100000_entries", "zip_non_utf8_names", "json_malformed", "json_over_memory_limit", "multipart_over_byte_limit",
    "json_wrong_shapes", "unknown_class_code", "abstention_class_as_label", "inactive_class", "label_nonexistent_image",
    "label_deleted_image", "adjudication_note_too_long", "slide_accession_name", "slide_accession_date",
    "sample_code_name", "nul_in_text",
]


def test_the_corpus_has_at_least_thirty_kinds():
    kinds = len(BAD_IMAGES) + len(ODD_BUT_VALID_IMAGES) + len(planted_files()) + len(BAD_ARCHIVES) + len(OTHER_KINDS)
    assert kinds >= 30, kinds


def _file(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


def _nothing_stored(settings):
    assert CellImage.objects.count() == 0
    assert media_files(settings) == []
    assert not AuditEvent.objects.filter(action="image.upload").exists()


def _no_planted_text_anywhere(settings, needle: str = "Jane"):
    for path in media_files(settings):
        assert needle.encode() not in path.read_bytes(), path
        assert needle not in str(path)
    for model in (CellImage, UploadBatch, AuditEvent):
        for row in model.objects.values():
            assert needle not in repr(row), row


def _assert_message(body) -> str:
    text = json.dumps(body)
    assert len(text) > 15, body
    return text


# --- Images ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_bad_image_is_refused_by_the_api_with_a_message(kind, client, labeller, settings):
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _file(BAD_IMAGES[kind], f"{kind}.jpg")})
    assert r.status_code == 400, r.content
    assert isinstance(r.json()["file"][0], str) and len(r.json()["file"][0]) > 10
    _nothing_stored(settings)


def test_bad_images_in_a_browser_upload_are_each_refused_with_a_reason(client, labeller, settings):
    client.force_login(labeller)
    files = [_file(data, f"{kind}.png") for kind, data in sorted(BAD_IMAGES.items())]
    r = client.post("/upload/", {"split": "train", "files": files}, HTTP_ACCEPT="application/json")
    assert r.status_code in (200, 400), r.content
    body = r.json()
    if r.status_code == 200:
        assert body["counts"]["stored"] == 0
        assert body["counts"]["refused"] == len(BAD_IMAGES)
        assert all(len(item["reason"]) > 5 for item in body["refused"])
    else:
        assert body["error"]
    _nothing_stored(settings)


@pytest.mark.parametrize("kind", sorted(ODD_BUT_VALID_IMAGES))
def test_unusual_image_is_accepted_as_clean_8bit_rgb_png(kind, client, labeller, settings):
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _file(ODD_BUT_VALID_IMAGES[kind], f"{kind}.img")})
    assert r.status_code == 201, r.content
    image = CellImage.objects.get(pk=r.json()["id"])
    stored = (settings.MEDIA_ROOT / image.file.name).read_bytes()
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (image.width, image.height)
    assert PLANTED not in stored and b"<script" not in stored and b"PK\x03\x04" not in stored
    _no_planted_text_anywhere(settings)


@pytest.mark.parametrize("kind", sorted(planted_files()))
def test_planted_name_in_metadata_never_reaches_storage_through_the_api(kind, client, labeller, settings):
    """The service-level check is tests/annotations/test_upload.py; this goes through HTTP."""
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _file(planted_files()[kind], "Jane_Doe_1970-01-01.jpg")})
    assert r.status_code == 201, r.content
    _no_planted_text_anywhere(settings)
    _no_planted_text_anywhere(settings, "1970-01-01")


# --- Archives -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BAD_ARCHIVES))
def test_dangerous_archive_is_refused_whole(kind, client, labeller, settings):
    client.force_login(labeller)
    r = client.post("/api/batches/", {"file": _file(BAD_ARCHIVES[kind], "cells.zip")})
    assert r.status_code == 400, r.content
    assert len(r.json()["file"][0]) > 10
    _nothing_stored(settings)
    assert UploadBatch.objects.count() == 0


def test_zip_with_100000_entries_is_refused_quickly(client, labeller, settings, tmp_path):
    path = tmp_path / "many.zip"
    zip_entries_file(path, 100_000)
    with zipfile.ZipFile(path) as zf:
        assert len(zf.infolist()) == 100_000
    client.force_login(labeller)
    with path.open("rb") as fh:
        r = client.post("/api/batches/", {"file": fh})
    assert r.status_code == 400, r.content
    assert "100,000 entries" in r.json()["file"][0]
    _nothing_stored(settings)
    assert UploadBatch.objects.count() == 0


def test_non_utf8_entry_names_are_read_and_never_stored(client, labeller, settings):
    archive = zip_with_raw_names([b"M\xfcller_Jane.png", b"\x8e\x99_Jane_2.png"], utf8_flag=False)
    client.force_login(labeller)
    r = client.post("/api/batches/", {"file": _file(archive, "cells.zip")})
    assert r.status_code == 201, r.content
    assert r.json()["counts"]["stored"] == 2
    assert CellImage.objects.count() == 2
    _no_planted_text_anywhere(settings)


# --- JSON API payloads ----------------------------------------------------------------------
@pytest.fixture
def cell(labeller):
    return image_upload(data=png_bytes((3, 4, 5), size=(32, 32)), uploaded_by=labeller,
                        enqueue_classification=False).image


JSON_ENDPOINTS = ["/api/labels/", "/api/labels/bulk/", "/api/labels/withdraw/", "/api/adjudications/",
                  "/api/classes/save/", "/api/lab-settings/", "/api/slides/"]


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_malformed_json_is_a_400_with_a_message(url, client, lab_admin):
    client.force_login(lab_admin)
    for body in ('{"image": 1,', "{'single': 'quotes'}", "\xff\xfe", "[1, 2", "NaN-ish garbage"):
        r = client.post(url, data=body, content_type="application/json")
        assert r.status_code == 400, (url, body, r.content)
        assert "detail" in r.json() and len(r.json()["detail"]) > 5


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_wrong_json_shapes_are_4xx(url, client, lab_admin, cell):
    client.force_login(lab_admin)
    for body in ([], [1, 2], "a string", 12, None, {"image": "one"}, {"image": [1]}, {"image": {"$gt": 0}},
                 {"image": 2**70, "cell_class": "lymphocyte"}, {"images": list(range(1000)), "cell_class": "x"},
                 {"cell_class": "x" * 10_000, "images": [cell.pk], "image": "x", "code": "x" * 10_000}, {"code": None}):
        r = client.post(url, data=json.dumps(body), content_type="application/json")
        assert 400 <= r.status_code < 500, (url, body, r.status_code, r.content)
        _assert_message(r.json())
    assert Label.objects.count() == 0


@pytest.mark.parametrize("url", ["/api/labels/", "/api/slides/"])
def test_json_body_over_the_memory_limit_is_refused(url, client, labeller, settings):
    client.force_login(labeller)
    big = json.dumps({"image": 1, "cell_class": "lymphocyte", "padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})
    r = client.post(url, data=big, content_type="application/json")
    assert r.status_code in (400, 413), r.status_code
    assert len(r.content) > 10
    assert Label.objects.count() == 0


def test_multipart_upload_over_the_byte_limit_is_refused(client, labeller, settings):
    settings.UPLOAD_MAX_BYTES = 50_000
    big = png_bytes(size=(400, 400))
    noisy = Image.effect_noise((400, 400), 100).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    assert len(buf.getvalue()) > settings.UPLOAD_MAX_BYTES
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _file(buf.getvalue(), "big.png")})
    assert r.status_code == 400
    assert "limit" in r.json()["file"][0]
    assert len(big) < settings.UPLOAD_MAX_BYTES  # a small one still passes
    assert client.post("/api/images/", {"file": _file(big, "small.png")}).status_code == 201
    assert CellImage.objects.count() == 1


def test_unknown_inactive_and_abstention_classes_are_refused(client, labeller, lab_admin, cell):
    client.force_login(labeller)
    r = client.post("/api/labels/", {"image": cell.pk, "cell_class": "dragon_cell"}, content_type="application/json")
    assert r.status_code == 400 and "Unknown class" in r.json()["cell_class"][0]
    abstain = CellClass.objects.filter(is_abstain=True).first()
    if abstain is not None:
        r = client.post("/api/labels/", {"image": cell.pk, "cell_class": abstain.code}, content_type="application/json")
        assert r.status_code == 400 and r.json()["cell_class"]
    retired = CellClass.objects.create(code="retired_class", name="Retired", active=False)
    r = client.post("/api/labels/", {"image": cell.pk, "cell_class": retired.code}, content_type="application/json")
    assert r.status_code == 400 and "no longer active" in json.dumps(r.json())
    r = client.post("/api/labels/bulk/", {"images": [cell.pk], "cell_class": "dragon_cell"},
                    content_type="application/json")
    assert r.status_code == 400
    assert Label.objects.count() == 0


def test_labels_for_nonexistent_and_deleted_images_are_refused(client, labeller, cell):
    client.force_login(labeller)
    r = client.post("/api/labels/", {"image": 987654, "cell_class": "lymphocyte"}, content_type="application/json")
    assert r.status_code == 404 and r.json()["detail"]
    deleted_pk = cell.pk
    cell.delete()
    r = client.post("/api/labels/", {"image": deleted_pk, "cell_class": "lymphocyte"}, content_type="application/json")
    assert r.status_code == 404 and r.json()["detail"]
    r = client.post("/api/labels/bulk/", {"images": [deleted_pk, 987654], "cell_class": "lymphocyte"},
                    content_type="application/json")
    assert r.status_code == 200
    assert {item["image"] for item in r.json()["refused"]} == {deleted_pk, 987654}
    r = client.post("/api/labels/withdraw/", {"image": deleted_pk}, content_type="application/json")
    assert r.status_code == 404
    assert Label.objects.count() == 0


def test_nul_characters_in_text_are_refused_not_a_database_error(client, lab_admin, cell):
    client.force_login(lab_admin)
    r = client.post("/api/labels/", {"image": cell.pk, "cell_class": "lymph\x00ocyte"}, content_type="application/json")
    assert r.status_code == 400
    r = client.post("/api/slides/", {"code": "S-1\x00"}, content_type="application/json")
    assert r.status_code == 400
    assert Label.objects.count() == 0


def test_adjudication_note_over_the_limit_is_refused(client, reviewer, cell):
    client.force_login(reviewer)
    r = client.post("/api/adjudications/", {"image": cell.pk, "cell_class": "lymphocyte", "note": "n" * 5000},
                    content_type="application/json")
    assert r.status_code == 400 and "note" in r.json()
    assert not cell.adjudications.exists()


@pytest.mark.parametrize("code", ["JaneDoe", "Jane Doe", "DOE-JANE", "1970-01-01", "01.02.1970", "19700101", "Müller"])
def test_slide_accession_that_looks_like_a_name_or_date_is_refused(code, client, labeller):
    client.force_login(labeller)
    r = client.post("/api/slides/", {"code": code}, content_type="application/json")
    assert r.status_code == 400, (code, r.content)
    assert "code" in r.json() and len(json.dumps(r.json()["code"])) > 20
    from slides.models import Slide

    assert not Slide.objects.exists()
    assert not any(code in repr(e.after) for e in AuditEvent.objects.all())


@pytest.mark.parametrize("code", ["Jane Doe", "JaneDoe", "1970-01-01"])
def test_sample_code_that_looks_like_a_name_is_refused_on_upload(code, client, labeller, settings):
    client.force_login(labeller)
    r = client.post("/api/batches/", {"files": [_file(png_bytes(), "a.png")], "sample_code": code})
    assert r.status_code == 400 and "sample_code" in r.json()
    _nothing_stored(settings)
