import io
import re
import zipfile

import pytest
from django.core.management import call_command
from PIL import Image, ImageCms, PngImagePlugin

from annotations.imaging import MIN_IMAGE_SIDE, ImageRejected, sanitize_image
from annotations.models import AuditEvent, CellImage
from annotations.services import image_upload, zip_upload
from tests.annotations.badfiles import BAD_FILES
from tests.helpers import jpeg_bytes, media_files, png_bytes

NAME = b"Jane Doe"


def _insert_jpeg_segment(jpeg: bytes, marker: bytes, payload: bytes) -> bytes:
    seg = marker + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + seg + jpeg[2:]


def _xmp() -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Jane Doe</dc:creator>'
            b"</rdf:Description></rdf:RDF></x:xmpmeta>")


def _iptc() -> bytes:
    record = b"\x1c\x02\x05" + len(NAME).to_bytes(2, "big") + NAME  # 2:05 ObjectName
    resource = b"8BIM" + b"\x04\x04" + b"\x00\x00" + len(record).to_bytes(4, "big") + record
    return b"Photoshop 3.0\x00" + resource


def _exif_with_name() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "Patient Jane Doe"  # ImageDescription
    exif[0x013B] = "Jane Doe"  # Artist
    exif[0x8298] = "Jane Doe"  # Copyright
    exif.get_ifd(0x8769)[0x927C] = b"MakerNote Jane Doe"  # maker note
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00Jane Doe"  # UserComment
    exif.get_ifd(0x8825)[1] = "N"  # GPS
    exif.get_ifd(0x8825)[2] = (41.0, 23.0, 2.0)
    return exif.tobytes()


def _icc_with_name() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() + b"Jane Doe"


def planted_files() -> dict[str, bytes]:
    base = Image.new("RGB", (80, 60), (180, 90, 160))
    out = {}
    buf = io.BytesIO()
    base.save(buf, format="JPEG", exif=_exif_with_name(), comment=b"Patient Jane Doe", icc_profile=_icc_with_name())
    jpeg = buf.getvalue()
    jpeg = _insert_jpeg_segment(jpeg, b"\xff\xe1", b"http://ns.adobe.com/xap/1.0/\x00" + _xmp())
    jpeg = _insert_jpeg_segment(jpeg, b"\xff\xed", _iptc())
    out["jpeg_exif_gps_comment_icc_xmp_iptc"] = jpeg

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_text("Comment", "Jane Doe", zip=True)
    info.add_itxt("XML:com.adobe.xmp", _xmp().decode())
    buf = io.BytesIO()
    base.save(buf, format="PNG", pnginfo=info, exif=_exif_with_name())
    out["png_text_itxt_exif"] = buf.getvalue()

    buf = io.BytesIO()
    base.save(buf, format="TIFF", tiffinfo={270: "Jane Doe", 315: "Jane Doe"})
    out["tiff_tags"] = buf.getvalue()
    return out


def test_sanitize_keeps_pixels_exactly_for_lossless_input():
    src = Image.new("RGB", (48, 32))
    src.putdata([(x * 7 % 256, y * 13 % 256, (x + y) % 256) for y in range(32) for x in range(48)])
    buf = io.BytesIO()
    src.save(buf, format="PNG")
    clean = sanitize_image(buf.getvalue(), max_pixels=10_000)
    assert list(Image.open(io.BytesIO(clean.png_bytes)).getdata()) == list(src.getdata())


@pytest.mark.parametrize("kind", list(planted_files()))
def test_planted_patient_name_never_reaches_storage(kind, labeller, settings):
    data = planted_files()[kind]
    assert NAME in data or b"Jane" in data
    outcome = image_upload(data=data, uploaded_by=labeller, enqueue_classification=False)
    stored = (settings.MEDIA_ROOT / outcome.image.file.name).read_bytes()
    assert NAME not in stored and b"Jane" not in stored
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "PNG"
        assert not set(img.info) & {"exif", "icc_profile", "XML:com.adobe.xmp", "Author", "Comment", "comment"}
        assert img.getexif() == {} or len(img.getexif()) == 0
    row = CellImage.objects.filter(pk=outcome.image.pk).values().get()
    assert "Jane" not in repr(row)


def test_original_file_name_is_not_stored(client, labeller, settings):
    client.force_login(labeller)
    f = io.BytesIO(png_bytes())
    f.name = "JaneDoe_1970-01-01.png"
    r = client.post("/api/images/", {"file": f})
    assert r.status_code == 201
    row = CellImage.objects.filter(pk=r.json()["id"]).values().get()
    assert "JaneDoe" not in repr(row)
    assert all("JaneDoe" not in str(p) for p in media_files(settings))
    assert not any("JaneDoe" in repr(e.after) for e in AuditEvent.objects.all())


def test_duplicate_is_stored_once(labeller, settings):
    data = jpeg_bytes()
    first = image_upload(data=data, uploaded_by=labeller, enqueue_classification=False)
    second = image_upload(data=data, uploaded_by=labeller, enqueue_classification=False)
    assert first.created and not second.created
    assert first.image.pk == second.image.pk
    assert CellImage.objects.count() == 1
    assert len(media_files(settings)) == 1


@pytest.mark.parametrize("kind", ["cmyk_jpeg", "png16_gray", "palette_png", "rgba_png", "grey_bmp"])
def test_unusual_but_valid_images_are_stored_as_rgb(kind, labeller, settings):
    buf = io.BytesIO()
    if kind == "cmyk_jpeg":
        Image.new("CMYK", (32, 32), (0, 100, 50, 10)).save(buf, format="JPEG")
    elif kind == "png16_gray":
        Image.new("I;16", (32, 32), 40000).save(buf, format="PNG")
    elif kind == "palette_png":
        Image.new("P", (32, 32), 3).save(buf, format="PNG")
    elif kind == "rgba_png":
        Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(buf, format="PNG")
    else:
        Image.new("L", (32, 32), 128).save(buf, format="BMP")
    outcome = image_upload(data=buf.getvalue(), uploaded_by=labeller, enqueue_classification=False)
    with Image.open(settings.MEDIA_ROOT / outcome.image.file.name) as img:
        assert img.mode == "RGB" and img.size == (32, 32)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_refused_clearly_and_nothing_stored(kind, client, labeller, settings):
    assert len(BAD_FILES) >= 15
    client.force_login(labeller)
    f = io.BytesIO(BAD_FILES[kind])
    f.name = f"{kind}.jpg"
    r = client.post("/api/images/", {"file": f})
    assert r.status_code == 400, r.content
    body = r.json()
    assert body["file"] and isinstance(body["file"][0], str) and len(body["file"][0]) > 10
    assert CellImage.objects.count() == 0
    assert media_files(settings) == []
    assert not AuditEvent.objects.filter(action="image.upload").exists()


def test_file_over_the_byte_limit_is_refused(labeller, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    with pytest.raises(ImageRejected, match="limit"):
        image_upload(data=jpeg_bytes(size=(400, 400)), uploaded_by=labeller)
    assert CellImage.objects.count() == 0


def test_api_upload_contract(client, labeller):
    client.force_login(labeller)
    f = io.BytesIO(jpeg_bytes())
    f.name = "x.jpg"
    r = client.post("/api/images/", {"file": f})
    assert r.status_code == 201
    body = r.json()
    assert isinstance(body["id"], int) and len(body["sha256"]) == 64 and body["split"] == "train"
    f.seek(0)
    r2 = client.post("/api/images/", {"file": f})
    assert r2.status_code == 200 and r2.json()["id"] == body["id"] and r2.json()["duplicate"] is True
    r3 = client.get("/api/images/")
    assert r3.status_code == 200 and r3.json()["count"] == 1 and r3.json()["results"][0]["id"] == body["id"]
    r4 = client.get(f"/api/images/{body['id']}/file/")
    assert r4.status_code == 200 and r4["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    "payload, field",
    [({}, "file"), ({"file": "not a file"}, "file"), ({"split": "everything"}, "split"), ({"sample_code": "Jane Doe"}, "sample_code")],
)
def test_api_malformed_payloads_get_field_errors(client, labeller, payload, field):
    client.force_login(labeller)
    data = dict(payload)
    if field != "file":
        f = io.BytesIO(png_bytes())
        f.name = "a.png"
        data["file"] = f
    r = client.post("/api/images/", data)
    assert r.status_code == 400
    assert field in r.json()
    assert CellImage.objects.count() == 0


def test_api_json_body_instead_of_multipart_is_a_400(client, labeller):
    client.force_login(labeller)
    r = client.post("/api/images/", data="{not json", content_type="application/json")
    assert r.status_code in (400, 415)


def test_labeller_cannot_upload_to_heldout_but_admin_can(client, labeller, lab_admin):
    client.force_login(labeller)
    f = io.BytesIO(png_bytes())
    f.name = "a.png"
    assert client.post("/api/images/", {"file": f, "split": "heldout"}).status_code == 403
    client.force_login(lab_admin)
    f.seek(0)
    r = client.post("/api/images/", {"file": f, "split": "heldout"})
    assert r.status_code == 201 and r.json()["split"] == "heldout"


def test_only_a_lab_admin_uploads_to_heldout_in_the_browser_the_batch_api_and_the_services(client, labeller, lab_admin):
    from django.core.exceptions import PermissionDenied
    from django.urls import reverse

    from annotations.services import files_upload

    def named(data: bytes, name: str) -> io.BytesIO:
        f = io.BytesIO(data)
        f.name = name
        return f

    client.force_login(labeller)
    r = client.post(reverse("annotations:upload"), {"files": named(png_bytes(), "a.png"), "split": "heldout"},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 403 and r.json() == {"error": "Only a lab admin can upload to the held-out set."}
    r = client.post("/api/batches/", {"file": _zip({"a.png": png_bytes()}), "split": "heldout"})
    assert r.status_code == 403 and r.json()["detail"] == "Only a lab admin can upload to the held-out set."
    with pytest.raises(PermissionDenied):
        zip_upload(fileobj=_zip({"a.png": png_bytes()}), uploaded_by=labeller, channel="api", split="heldout")
    with pytest.raises(PermissionDenied):
        files_upload(files=[("a.png", png_bytes())], uploaded_by=labeller, channel="api", split="heldout")
    assert not CellImage.objects.exists()

    client.force_login(lab_admin)
    r = client.post(reverse("annotations:upload"), {"files": named(png_bytes(), "a.png"), "split": "heldout"},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and r.json()["counts"]["stored"] == 1
    assert list(CellImage.objects.values_list("split", flat=True)) == ["heldout"]


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    buf.seek(0)
    buf.name = "cells.zip"
    return buf


def test_zip_upload_stores_images_and_reports_each_refusal(labeller):
    archive = _zip({"a/one.png": png_bytes((1, 2, 3)), "two.jpg": jpeg_bytes(), "notes.txt": b"hello",
                    "bad.png": b"\x89PNG garbage", "dup.png": png_bytes((1, 2, 3))})
    summary = zip_upload(fileobj=archive, uploaded_by=labeller, channel="api").as_dict()
    assert summary["counts"] == {"stored": 2, "duplicates": 1, "refused": 2}
    reasons = {r["name"]: r["reason"] for r in summary["refused"]}
    assert "not an image" in reasons["notes.txt"]
    assert "bad.png" in reasons
    assert CellImage.objects.count() == 2


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "bomb", "too_many", "not_a_zip"])
def test_dangerous_zip_is_refused_whole(case, client, labeller, settings):
    good = {"ok.png": png_bytes()}
    if case == "dotdot":
        archive = _zip({**good, "../../etc/evil.png": png_bytes((9, 9, 9))})
    elif case == "absolute":
        archive = _zip({**good, "/tmp/evil.png": png_bytes((9, 9, 9))})
    elif case == "symlink":
        archive = _zip(good, symlink="link.png")
    elif case == "bomb":
        archive = _zip({**good, "bomb.png": b"\x00" * (80 * 1024 * 1024)})
    elif case == "too_many":
        settings.ZIP_MAX_ENTRIES = 50
        archive = _zip({f"{i}.png": b"x" for i in range(60)})
    else:
        archive = io.BytesIO(b"PK\x03\x04 this is not really a zip")
        archive.name = "x.zip"
    client.force_login(labeller)
    r = client.post("/api/batches/", {"file": archive})
    assert r.status_code == 400, r.content
    assert r.json()["file"][0]
    assert CellImage.objects.count() == 0
    assert media_files(settings) == []


def test_zip_member_that_cannot_be_unpacked_is_refused_alone_and_a_refused_archive_leaves_no_trace(labeller, settings):
    from annotations.archives import ArchiveRejected
    from annotations.models import UploadBatch

    # a member whose stored data fails its CRC check: refused alone, the others stored
    buf = _zip({"one.png": png_bytes((1, 2, 3)), "two.png": png_bytes((4, 5, 6))}).getvalue()
    with zipfile.ZipFile(io.BytesIO(buf)) as zf:
        info = zf.getinfo("two.png")
    data = bytearray(buf)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the member's compressed bytes
    data[start + info.compress_size // 2] ^= 0xFF
    corrupt = io.BytesIO(bytes(data))
    summary = zip_upload(fileobj=corrupt, uploaded_by=labeller, channel="api").as_dict()
    assert summary["counts"] == {"stored": 1, "duplicates": 0, "refused": 1}
    assert summary["refused"][0]["name"] == "two.png" and "could not be unpacked" in summary["refused"][0]["reason"]
    assert CellImage.objects.count() == 1
    # a dangerous archive: refused before anything is stored, no batch row; the attempt is audited (who, the
    # channel, the refusal's code), and no name from the archive (its own, its entries') is kept
    events = AuditEvent.objects.count()
    evil = _zip({"ok.png": png_bytes((7, 7, 7)), "../evil.png": png_bytes()})
    evil.name = "Doe_John_1970.zip"
    with pytest.raises(ArchiveRejected) as refused:
        zip_upload(fileobj=evil, uploaded_by=labeller, channel="api")
    assert CellImage.objects.count() == 1 and UploadBatch.objects.count() == 1
    assert AuditEvent.objects.count() == events + 1
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.actor, event.target_type, event.target_id) == (
        "batch.archive_refused", labeller, "Upload", "zip")
    assert event.after == {"channel": "api", "code": "unsafe_path"} == {"channel": "api", "code": refused.value.code}


# --- Images too small to be a cell; duplicates in another split --------------------------------------------
def _named(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


def _summary_row(html: str, name: str) -> str:
    """The upload summary's table row of one file, as rendered."""
    match = re.search(rf"<tr(?: class=\"\w+\")?><td>{re.escape(name)}</td>.*?</tr>", html)
    assert match, html
    return match.group(0)


TOO_SMALL = "too small to be a cell: each side needs at least 32 pixels"


def test_the_smallest_side_accepted_is_the_stated_minimum():
    assert MIN_IMAGE_SIDE == 32
    assert sanitize_image(png_bytes(size=(32, 32)), max_pixels=10_000).width == 32
    for size in ((1, 1), (31, 400), (400, 31)):
        with pytest.raises(ImageRejected) as refused:
            sanitize_image(png_bytes(size=size), max_pixels=10**6)
        assert refused.value.code == "too_small"
        assert refused.value.message == f"The image is {size[0]}x{size[1]} pixels, {TOO_SMALL}."


def test_an_image_too_small_to_be_a_cell_is_refused_by_every_channel(client, labeller, lab_admin, tmp_path,
                                                                     capsys, settings):
    tiny, narrow = png_bytes(size=(1, 1)), jpeg_bytes(size=(300, 31))
    client.force_login(labeller)
    r = client.post("/api/images/", {"file": _named(tiny, "tiny.png")})
    assert r.status_code == 400 and r.json() == {"file": [f"The image is 1x1 pixels, {TOO_SMALL}."],
                                                 "code": "too_small"}
    r = client.post("/api/batches/", {"files": [_named(narrow, "narrow.jpg")]})
    assert r.status_code == 201 and r.json()["refused"][0]["reason"] == f"The image is 300x31 pixels, {TOO_SMALL}."
    page = client.post("/upload/", {"split": "train", "files": [_named(tiny, "tiny.png")]}).content.decode()
    assert f"The image is 1x1 pixels, {TOO_SMALL}." in _summary_row(page, "tiny.png")
    # a slide of cropped cells, and a slide of fields
    for kind in ("cells", "fields"):
        slide = client.post("/api/slides/", {"code": f"S-{kind}-1", "kind": kind}, content_type="application/json")
        assert slide.status_code == 201, slide.content
        r = client.post(f"/api/slides/{slide.json()['id']}/images/", {"files": [_named(tiny, "tiny.png")]})
        assert r.status_code == 400 and r.json()["refused"] == [
            {"name": "tiny.png", "reason": f"The image is 1x1 pixels, {TOO_SMALL}."}]
    folder = tmp_path / "tree" / "monocyte"
    folder.mkdir(parents=True)
    (folder / "tiny.png").write_bytes(tiny)
    call_command("import_cells", str(folder.parent), "--labelled-by", lab_admin.username, "--no-progress")
    assert f"tiny.png: The image is 1x1 pixels, {TOO_SMALL}." in capsys.readouterr().err
    assert CellImage.objects.count() == 0 and not [p for p in media_files(settings) if "/images/" in str(p)]


def test_a_training_image_uploaded_again_as_heldout_says_it_stays_in_training(client, labeller, lab_admin, tmp_path,
                                                                              capsys):
    data = png_bytes((12, 34, 56))
    train = image_upload(data=data, uploaded_by=labeller, enqueue_classification=False).image
    says = (f"duplicate of image {train.pk}: it stays in the training split, not added to the held-out set "
            "(a lab admin moves an image between splits on its page)")
    client.force_login(lab_admin)
    r = client.post("/api/images/", {"file": _named(data, "again.png"), "split": "heldout"})
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert r.json()["split"] == "train" and r.json()["message"] == says
    r = client.post("/api/batches/", {"files": [_named(data, "again.png")], "split": "heldout"})
    assert r.json()["duplicates"] == [{"name": "again.png", "id": train.pk, "sha256": train.sha256, "split": "train",
                                       "message": says}]
    page = client.post("/upload/", {"split": "heldout", "files": [_named(data, "again.png")]}).content.decode()
    assert says in _summary_row(page, "again.png")
    folder = tmp_path / "tree" / "monocyte"
    folder.mkdir(parents=True)
    (folder / "again.png").write_bytes(data)
    call_command("import_cells", str(folder.parent), "--split", "heldout", "--labelled-by", lab_admin.username,
                 "--no-progress")
    assert f"again.png: {says}" in capsys.readouterr().err
    train.refresh_from_db()
    assert train.split == "train" and CellImage.objects.count() == 1
    # the same split: said plainly
    r = client.post("/api/images/", {"file": _named(data, "again.png"), "split": "train"})
    assert r.json()["message"] == f"duplicate of image {train.pk}, already in the training split"
