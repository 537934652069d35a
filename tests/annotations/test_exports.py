"""The cell export: an ImageFolder tree of the stored pixels, a manifest of every reading, the taxonomy;
selection, privacy, streaming, audit, page, API and command."""
import csv
import datetime as dt
import io
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from annotations import exports
from annotations.models import AuditEvent, CellImage


def export_zip(actor=None, **selection) -> tuple[zipfile.ZipFile, exports.ZipExport]:
    export = exports.cells_export(selection=exports.cell_selection_clean(**selection), actor=actor, channel="cli")
    data = b"".join(export.chunks)
    assert len(data) == export.size  # the length announced before the first byte
    return zipfile.ZipFile(io.BytesIO(data)), export


def manifest(zf) -> list[dict]:
    return list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))


def test_the_tree_holds_the_stored_pixels_byte_for_byte_under_the_final_class(lab):
    zf, _ = export_zip(status="all")
    for key in ("agreed", "disputed", "changed", "slide_cell"):
        image = CellImage.objects.get(pk=lab[key].pk)
        with image.file.open("rb") as fh:
            assert zf.read(f"{image.final_label.code}/{image.sha256}.png") == fh.read()
    waiting = lab["waiting"]
    assert f"undecided/{waiting.sha256}.png" in zf.namelist()
    for never in ("unverified_slide_cell", "field"):  # not verified by anyone / exported with its slide
        assert not [n for n in zf.namelist() if lab[never].sha256 in n]
    assert zf.read("manifest.csv").decode().count(lab["unread"].sha256) == 2  # path and sha256 of its one row
    classes = list(csv.DictReader(io.StringIO(zf.read("classes.csv").decode())))
    assert {"code", "name", "hotkey", "active"} <= set(classes[0])
    assert {c["code"] for c in classes} >= {"lymphocyte", "monocyte", "blast", "unidentified"}


def test_the_manifest_says_how_each_class_was_decided_and_carries_every_reading(lab, labeller):
    zf, export = export_zip(status="all", include_names=True)
    rows = manifest(zf)
    by_sha = {}
    for row in rows:
        by_sha.setdefault(row["sha256"], []).append(row)
    agreed = by_sha[lab["agreed"].sha256]
    assert {r["decided_by"] for r in agreed} == {"agreement"}
    assert sorted((r["reader"], r["reader_class"]) for r in agreed) == [("lab1", "lymphocyte"), ("lab2", "lymphocyte")]
    disputed = by_sha[lab["disputed"].sha256]
    assert {(r["decided_by"], r["final_class"], r["adjudicated_by"], r["adjudicated_class"]) for r in disputed} == {
        ("adjudication", "monocyte", "rev1", "monocyte")}
    assert {r["adjudication_note"] for r in disputed} == {"kidney-shaped nucleus"}
    assert {(r["reader_class"], r["unsure"]) for r in disputed} == {("lymphocyte", "false"), ("monocyte", "true")}
    changed = sorted(by_sha[lab["changed"].sha256], key=lambda r: r["read_at"])
    assert [(r["reader_class"], r["suggested_class"], r["confirmed_suggestion"], bool(r["superseded_at"]))
            for r in changed] == [("monocyte", "monocyte", "true", True), ("eosinophil", "monocyte", "false", False)]
    assert by_sha[lab["slide_cell"].sha256][0]["decided_by"] == "slide_verification"
    assert by_sha[lab["slide_cell"].sha256][0]["source"] == "slide_cell"
    waiting = by_sha[lab["waiting"].sha256]
    assert [(r["final_class"], r["decided_by"], r["reader"]) for r in waiting] == [("", "", "lab2")]
    unread = by_sha[lab["unread"].sha256]
    assert len(unread) == 1 and unread[0]["reader"] == "" and unread[0]["path"].startswith("undecided/")
    assert export.counts["images"] == 6 and export.counts["readings"] == 8
    first = dt.datetime.fromisoformat(agreed[0]["read_at"])
    assert first.utcoffset() == dt.timedelta(0) and first.microsecond  # exact times, in UTC


def test_without_the_ticks_no_user_name_nor_code_leaves(lab, labeller, labeller2, reviewer):
    zf, _ = export_zip(status="all")
    text = zf.read("manifest.csv").decode()
    for name in ("lab1", "lab2", "rev1", "S-204", "ACC-0042", "kidney"):
        assert name not in text
    rows = manifest(zf)
    readers = {r["reader"] for r in rows if r["reader"]} | {r["adjudicated_by"] for r in rows if r["adjudicated_by"]}
    assert readers == {exports.reader_pseudonym(u.pk) for u in (labeller, labeller2, reviewer)}
    # stable: the same pseudonyms in a later export
    again = {r["reader"] for r in manifest(export_zip(status="all")[0]) if r["reader"]}
    assert again <= readers and len(readers) == 3
    with_codes = manifest(export_zip(status="all", include_accessions=True)[0])
    assert {r["sample_code"] for r in with_codes if r["source"] == "slide_cell"} == {"ACC-0042"}
    assert "lab1" not in {r["reader"] for r in with_codes}


@pytest.mark.parametrize(("selection", "expected"), [
    ({}, {"agreed", "disputed", "changed", "slide_cell"}),
    ({"status": "adjudicated"}, {"disputed"}),
    ({"status": "all", "split": "heldout"}, {"disputed", "waiting"}),
    ({"classes": "lymphocyte,eosinophil"}, {"agreed", "changed"}),
    ({"sources": "cell"}, {"agreed", "disputed", "changed"}),
    ({"sources": ["slide_cell"], "status": "all"}, {"slide_cell"}),
    ({"start": "2000-01-01", "end": "2000-12-31"}, set()),
    ({"date_field": "decided", "start": dt.date.today().isoformat()}, {"agreed", "disputed", "changed", "slide_cell"}),
])
def test_the_selection_takes_what_it_says(lab, selection, expected):
    chosen = exports.cells_for_export(selection=exports.cell_selection_clean(**selection))
    assert set(chosen.values_list("pk", flat=True)) == {lab[k].pk for k in expected}


@pytest.mark.parametrize(("selection", "field"), [
    ({"split": "test"}, "split"), ({"classes": "lymphocyte,dragon"}, "classes"), ({"status": "some"}, "status"),
    ({"sources": "field"}, "sources"), ({"start": "2024-02-30"}, "start"),
    ({"start": "2024-03-02", "end": "2024-03-01"}, "end"), ({"date_field": "signed"}, "date_field"),
])
def test_a_bad_selection_is_refused_naming_the_field(db, selection, field):
    with pytest.raises(ValidationError) as exc:
        exports.cell_selection_clean(**selection)
    assert field in exc.value.message_dict


def test_the_exported_tree_is_read_by_torchvision_imagefolder(lab, tmp_path):
    from torchvision.datasets import ImageFolder

    zf, _ = export_zip()
    zf.extractall(tmp_path / "tree")
    dataset = ImageFolder(str(tmp_path / "tree"))
    assert sorted(dataset.classes) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil_segmented"]
    assert len(dataset) == 4
    truth = {r["path"]: r["final_class"] for r in manifest(zf)}
    for path, target in dataset.samples:
        relative = path.split("/tree/", 1)[1]
        assert dataset.classes[target] == truth[relative]
        image, _ = dataset[dataset.samples.index((path, target))]
        assert image.size == (40, 32)


def test_the_archive_is_made_while_it_is_read_and_the_export_is_audited(lab, lab_admin, monkeypatch):
    from annotations import archives

    monkeypatch.setattr(archives, "STREAM_CHUNK", 1024)  # so that this small archive comes in several pieces
    seen = []
    export = exports.cells_export(selection=exports.cell_selection_clean(), actor=lab_admin, channel="api",
                                  progress=lambda done, total: seen.append((done, total)))
    event = AuditEvent.objects.get(action="cells.export")
    assert event.actor == lab_admin and event.after["images"] == 4 and event.after["channel"] == "api"
    assert event.after["selection"]["status"] == "final" and event.after["manifest_sha256"]
    assert not seen  # nothing written before the first read
    first = next(export.chunks)
    assert first.startswith(b"PK\x03\x04") and all(done < 7 for done, _ in seen)  # sent before the rest is made
    rest = b"".join(export.chunks)
    assert len(first) + len(rest) == export.size and seen[-1] == (7, 7)  # 4 cells + README, classes, manifest
    zipfile.ZipFile(io.BytesIO(first + rest)).testzip()


def test_a_missing_image_file_is_an_error_before_anything_is_sent(lab):
    image = CellImage.objects.get(pk=lab["agreed"].pk)
    image.file.storage.delete(image.file.name)
    with pytest.raises(ValidationError, match="missing"):
        exports.cells_export(selection=exports.cell_selection_clean(), actor=None, channel="cli")


def test_the_page_counts_streams_the_zip_and_reports_progress(client, lab, lab_admin, reviewer):
    client.force_login(reviewer)
    assert client.get("/export/cells/").status_code == 403
    assert client.post("/export/cells/", {"sources": ["cell"]}).status_code == 403
    client.force_login(lab_admin)
    page = client.get("/export/cells/")
    assert page.status_code == 200 and b'id="export-form"' in page.content and b"export.js" in page.content
    counted = client.get("/export/cells/", {"count": "1", "split": "all", "status": "final", "date_field": "uploaded",
                                            "sources": ["cell", "slide_cell"]})
    assert b"<strong>4</strong> cells match" in counted.content
    r = client.post("/export/cells/", {"split": "all", "status": "final", "date_field": "uploaded",
                                       "sources": ["cell"], "classes": ["lymphocyte", "monocyte"],
                                       "progress_token": "tok-12345678"})
    assert r.status_code == 200 and r.streaming and r["Content-Type"] == "application/zip"
    assert r["Content-Disposition"].startswith('attachment; filename="leukoportal-cells-')
    data = b"".join(r.streaming_content)
    assert int(r["Content-Length"]) == len(data)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(n.split("/")[0] for n in names if n.endswith(".png")) == ["lymphocyte", "monocyte"]
    state = client.get("/export/progress/", {"token": "tok-12345678"}).json()
    assert state == {"done": 5, "total": 5, "unit": "files", "finished": True}
    assert client.get("/export/progress/", {"token": "x"}).status_code == 400
    refused = client.post("/export/cells/", {"split": "all", "status": "final", "date_field": "uploaded"})
    assert refused.status_code == 400 and b"Choose uploaded cells" in refused.content


def test_the_api_streams_the_same_export_to_lab_admins_only(client, lab, lab_admin, labeller):
    client.force_login(labeller)
    assert client.get("/api/exports/cells/").status_code == 403
    client.force_login(lab_admin)
    r = client.get("/api/exports/cells/", {"status": "adjudicated", "include_names": "true"})
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content)))
    assert {row["adjudicated_by"] for row in manifest(zf)} == {"rev1"}
    bad = client.get("/api/exports/cells/", {"classes": "dragon"})
    assert bad.status_code == 400 and "dragon" in bad.json()["classes"][0]
    assert AuditEvent.objects.filter(action="cells.export", after__channel="api").count() == 1


def test_the_export_cells_command_writes_the_zip_with_a_progress_bar(lab, tmp_path, capsys):
    out = tmp_path / "cells.zip"
    call_command("export_cells", str(out), "--status", "all", "--split", "heldout")
    captured = capsys.readouterr()
    assert "exported 2 cells, 3 readings" in captured.out
    assert "Exporting" in captured.err and "100%" in captured.err  # tqdm's bar
    zf = zipfile.ZipFile(out)
    assert {r["split"] for r in manifest(zf)} == {"heldout"}
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(Exception, match="Unknown class"):
        call_command("export_cells", str(tmp_path / "x.zip"), "--classes", "dragon", "--no-progress")
    assert not (tmp_path / "x.zip").exists()
