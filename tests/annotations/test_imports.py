"""Reading an export back: a round trip reproduces images, final classes and readings exactly (on
PostgreSQL); a second import changes nothing; a manifest that disagrees with its images is refused
whole, naming the line; readers are mapped to users; the command, the page and the API."""
import csv
import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from annotations import exports, imports
from annotations.models import Adjudication, AuditEvent, CellImage, Label, LabSettings, UploadBatch
from annotations.selectors import labelling_queue
from tests.annotations.lab_data import flush_cells, snapshot
from tests.factories import cell_class
from tests.helpers import media_files, png_bytes


def export_bytes(**selection) -> bytes:
    export = exports.cells_export(selection=exports.cell_selection_clean(**{"status": "all", **selection}),
                                  actor=None, channel="cli")
    return b"".join(export.chunks)


def do_import(data: bytes, importer, **options) -> imports.CellImportSummary:
    return imports.cells_import_export(source=io.BytesIO(data), importer=importer, channel="cli", **options)


def rows_count() -> dict:
    """The rows an import writes, but its audit event: every attempt writes one (see last_attempt)."""
    return {m.__name__: m.objects.count() for m in (CellImage, Label, Adjudication, UploadBatch)}


def last_attempt(action: str = "cells.import") -> dict:
    """The audit event of the latest import attempt (every attempt has one, also one that wrote nothing
    or was refused)."""
    event = AuditEvent.objects.filter(action__in=("cells.import", "cells.import_refused")).first()
    assert event is not None and event.action == action, event
    return event.after


def test_a_round_trip_into_an_emptied_database_reproduces_images_final_classes_and_readings(lab, lab_admin):
    assert connection.vendor == "postgresql"
    before = snapshot()
    data = export_bytes(include_names=True, include_accessions=True)
    flush_cells()
    assert CellImage.objects.count() == 0 and not media_files_of_images()
    summary = do_import(data, lab_admin)
    assert summary.images_created == 6 and summary.readings_created == 8 and summary.adjudications_created == 1
    assert summary.reencoded == 0 and not summary.kept and not summary.readers_created
    assert snapshot() == before
    image = CellImage.objects.get(sha256=lab["disputed"].sha256)
    assert image.uploaded_by == lab_admin and image.batch.channel == "cli"
    imported = AuditEvent.objects.filter(action="image.import")
    assert imported.count() == 6 and AuditEvent.objects.filter(action="cells.import").count() == 1


def media_files_of_images():
    from django.conf import settings

    return [p for p in media_files(settings) if "/images/" in str(p)]


def test_a_pseudonymous_export_into_a_fresh_portal_keeps_each_reader_apart(lab, lab_admin, labeller, labeller2,
                                                                           reviewer):
    pseudonyms = {u.get_username(): exports.reader_pseudonym(u.pk) for u in (labeller, labeller2, reviewer)}
    before = snapshot(reader_name=lambda u: pseudonyms[u.get_username()])
    for cell in before.values():  # what leaves only when ticked: notes with the names, sample codes with codes
        cell["adjudications"] = [a[:3] + ("",) for a in cell["adjudications"]]
        cell["sample_code"] = ""
    data = export_bytes()
    flush_cells(labeller, labeller2, reviewer)  # a fresh portal: none of the readers is a user there
    with pytest.raises(imports.ImportRefused) as refused:
        do_import(data, lab_admin)
    assert any(f"reader {pseudonyms['lab1']!r} is not a user" in p and "line " in p for p in refused.value.problems)
    assert CellImage.objects.count() == 0 and not media_files_of_images()
    summary = do_import(data, lab_admin, create_readers=True)
    assert sorted(summary.readers_created) == sorted(pseudonyms.values())
    assert snapshot(reader_name=lambda u: u.get_username()) == before
    from django.contrib.auth import get_user_model

    for name in pseudonyms.values():
        account = get_user_model().objects.get(username=name)
        assert not account.is_active and not account.has_usable_password() and not account.groups.exists()


def test_importing_the_same_export_twice_changes_nothing(lab, lab_admin):
    data = export_bytes(include_names=True)
    flush_cells()
    first = do_import(data, lab_admin)
    assert first.changed
    counts, files = rows_count(), media_files_of_images()
    events = AuditEvent.objects.count()
    second = do_import(data, lab_admin)
    assert not second.changed and second.images_present == 6
    assert rows_count() == counts and media_files_of_images() == files
    # the attempt that wrote nothing is audited, and is all that was written
    assert AuditEvent.objects.count() == events + 1
    assert last_attempt()["changed"] is False and last_attempt()["images_present"] == 6


def test_a_pseudonymous_export_read_back_into_its_own_portal_finds_its_readers(lab, lab_admin):
    data = export_bytes()
    counts = rows_count()
    summary = do_import(data, lab_admin)
    assert summary.images_present == 6 and not summary.changed and rows_count() == counts


def test_an_export_restores_the_lost_file_of_a_cell_still_here(lab, lab_admin):
    data = export_bytes()
    image = CellImage.objects.get(pk=lab["agreed"].pk)
    with image.file.open("rb") as fh:
        pixels = fh.read()
    image.file.storage.delete(image.file.name)
    summary = do_import(data, lab_admin)
    assert summary.images_present == 6 and not summary.changed
    with image.file.open("rb") as fh:
        assert fh.read() == pixels


def test_a_cell_with_other_readings_here_is_kept_and_listed(lab, lab_admin, labeller, labeller2):
    data = export_bytes(include_names=True)
    from annotations.services import label_submit

    label_submit(image=lab["unread"], labeller=labeller2, cell_class=cell_class("basophil"))
    counts = rows_count()
    summary = do_import(data, lab_admin)
    assert [k["sha256"] for k in summary.kept] == [lab["unread"].sha256]
    assert "kept as it is here" in summary.kept[0]["reason"] and not summary.changed and rows_count() == counts


def test_labelled_by_records_each_final_class_as_one_users_reading(lab, lab_admin, labeller):
    data = export_bytes(include_names=True)
    flush_cells()
    summary = do_import(data, lab_admin, labelled_by=labeller)
    assert summary.readings_created == 4 and summary.adjudications_created == 0
    finals = dict(CellImage.objects.filter(final_label__isnull=False).values_list("sha256", "final_label__code"))
    # the held-out cell adjudicated there is one reading here, and this lab requires two of a held-out cell
    assert finals == {lab[k].sha256: c for k, c in (("agreed", "lymphocyte"), ("changed", "eosinophil"),
                                                     ("slide_cell", "neutrophil_segmented"))}
    disputed = CellImage.objects.get(sha256=lab["disputed"].sha256)
    assert disputed.current_label_count == 1 and not disputed.needs_review and disputed.final_label is None
    assert [(r["sha256"], r["reason"]) for r in summary.redecided] == [(
        disputed.sha256, "final monocyte in the export; waits for more readings here "
                         "(1 current reading(s); this lab requires 2 for a heldout cell)")]
    assert set(Label.objects.values_list("labeller__username", flat=True)) == {"lab1"}
    assert not do_import(data, lab_admin, labelled_by=labeller).changed


# --- Refusals: the whole export, naming the line, nothing imported -------------------------------------------
def rewrite(data: bytes, *, manifest=None, drop=(), add=None) -> bytes:
    """The export with its manifest rows changed by ``manifest(rows)``, members dropped or added."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name in drop:
                continue
            body = src.read(name)
            if name == "manifest.csv" and manifest is not None:
                rows = list(csv.reader(io.StringIO(body.decode())))
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows(manifest(rows))
                body = text.getvalue().encode()
            dst.writestr(name, body)
        for name, body in (add or {}).items():
            dst.writestr(name, body)
    return out.getvalue()


def col(name: str) -> int:
    return exports.MANIFEST_COLUMNS.index(name)


def _set(line: int, column: str, value: str):
    def change(rows):
        rows[line - 1][col(column)] = value
        return rows
    return change


@pytest.fixture
def emptied_export(lab):
    data = export_bytes(include_names=True)
    flush_cells()
    return data


def first_image_path(data: bytes) -> str:
    return next(r for r in csv.DictReader(io.StringIO(zipfile.ZipFile(io.BytesIO(data)).read("manifest.csv").decode())))[
        "path"]


@pytest.mark.parametrize(("case", "expected"), [
    ("missing file", "manifest.csv line 2: the file lymphocyte/"),
    ("sha256 mismatch", "manifest.csv line 2: sha256 mismatch"),
    ("unknown class", "manifest.csv line 2: unknown class 'dragon'"),
    ("bad split", "manifest.csv line 9: split 'test' is not train or heldout"),
    ("split disagrees", "manifest.csv line 3: split 'test' disagrees with line 2 ('train') for the same cell"),
    ("short row", "manifest.csv line 4: has fewer fields than the header"),
    ("bad time", "manifest.csv line 2: read_at 'yesterday' is not an ISO 8601 time"),
    ("contradiction", "manifest.csv line 2: decided by agreement as 'lymphocyte', but the current readings are "
                      "lymphocyte, monocyte"),
    ("wrong folder", "manifest.csv line 9: path 'undecided/"),
    ("not an image", "is refused: The file is a PDF document"),
    ("file not in manifest", "lymphocyte/extra.png is in the archive but not in manifest.csv"),
])
def test_an_export_that_disagrees_with_itself_is_refused_whole_naming_the_line(emptied_export, lab_admin, case,
                                                                               expected):
    data = emptied_export
    path = first_image_path(data)
    changed = {
        "missing file": lambda: rewrite(data, drop=(path,)),
        "sha256 mismatch": lambda: rewrite(data, drop=(path,), add={path: png_bytes((1, 2, 3), size=(32, 24))}),
        "unknown class": lambda: rewrite(data, manifest=_set(2, "reader_class", "dragon")),
        "bad split": lambda: rewrite(data, manifest=_set(9, "split", "test")),
        "split disagrees": lambda: rewrite(data, manifest=_set(3, "split", "test")),
        "short row": lambda: rewrite(data, manifest=lambda rows: rows[:3] + [rows[3][:5]] + rows[4:]),
        "bad time": lambda: rewrite(data, manifest=_set(2, "read_at", "yesterday")),
        "contradiction": lambda: rewrite(data, manifest=_set(3, "reader_class", "monocyte")),
        "wrong folder": lambda: rewrite(data, manifest=_set(9, "final_class", "monocyte")),
        "not an image": lambda: rewrite(data, drop=(path,), add={path: b"%PDF-1.4 not a cell"}),
        "file not in manifest": lambda: rewrite(data, add={"lymphocyte/extra.png": png_bytes()}),
    }[case]()
    if case == "not an image":  # its sha256 in the manifest must match, or the mismatch is found first
        import hashlib

        changed = rewrite(changed, manifest=lambda rows: [
            r if i == 0 or r[col("path")] != path else
            r[:col("sha256")] + [hashlib.sha256(b"%PDF-1.4 not a cell").hexdigest()] + r[col("sha256") + 1:]
            for i, r in enumerate(rows)])
    counts = rows_count()
    with pytest.raises(imports.ImportRefused) as refused:
        do_import(changed, lab_admin)
    assert any(expected in p for p in refused.value.problems), refused.value.problems
    assert rows_count() == counts and CellImage.objects.count() == 0
    assert not media_files_of_images()  # no file left behind either
    # the refusal is audited, with its problems, though nothing else was kept
    refusal = last_attempt("cells.import_refused")
    assert refusal["channel"] == "cli" and refusal["problems"] == len(refused.value.problems)
    assert any(expected in p for p in refusal["first_problems"])


def test_a_final_class_by_agreement_must_follow_from_the_readings(emptied_export, lab_admin):
    def claim(rows):
        for r in rows[1:]:
            if r[col("decided_by")] == "adjudication":
                r[col("decided_by")] = "agreement"
        return rows
    with pytest.raises(imports.ImportRefused) as refused:
        do_import(rewrite(emptied_export, manifest=claim), lab_admin)
    assert any("decided_by must be adjudication" in p for p in refused.value.problems)


def test_an_unsafe_archive_is_refused_before_anything(db, lab_admin):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("../manifest.csv", "x")
    with pytest.raises(imports.ArchiveRejected):
        do_import(out.getvalue(), lab_admin)


# --- Command, page, API --------------------------------------------------------------------------------
def test_import_cells_reads_an_export_zip_or_folder_and_keeps_the_plain_tree_import(emptied_export, tmp_path, lab_admin,
                                                                                     capsys, demo_cells):
    archive = tmp_path / "cells.zip"
    archive.write_bytes(emptied_export)
    with pytest.raises(CommandError, match="carries the split"):
        call_command("import_cells", str(archive), "--split", "train", "--no-progress")
    call_command("import_cells", str(archive))
    captured = capsys.readouterr()
    assert "cells 6 new, 0 already here; readings 8, adjudications 1" in captured.out
    assert "Checking" in captured.err  # the progress bar
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(archive).extractall(folder)
    call_command("import_cells", str(folder), "--no-progress")
    assert "cells 0 new, 6 already here; readings 0" in capsys.readouterr().out
    broken = tmp_path / "broken.zip"
    broken.write_bytes(rewrite(emptied_export, manifest=_set(2, "reader_class", "dragon")))
    with pytest.raises(CommandError, match="refused"):
        call_command("import_cells", str(broken), "--no-progress")
    assert "unknown class 'dragon'" in capsys.readouterr().err
    assert last_attempt("cells.import_refused")["channel"] == "cli"  # the refused attempt is audited
    tree = tmp_path / "tree" / "basophil"  # the README's plain ImageFolder import, as before
    tree.mkdir(parents=True)
    shutil.copy(sorted((demo_cells / "basophil").iterdir())[0], tree)
    call_command("import_cells", str(tree.parent), "--split", "train", "--no-progress")
    assert "stored 1, duplicates 0, labels 1, refused 0" in capsys.readouterr().out


def test_the_import_page_imports_or_lists_every_problem(client, emptied_export, lab_admin, reviewer):
    client.force_login(reviewer)
    assert client.get("/import/cells/").status_code == 403
    client.force_login(lab_admin)
    assert client.get("/import/cells/").status_code == 200
    bad = io.BytesIO(rewrite(emptied_export, manifest=_set(2, "reader_class", "dragon")))
    bad.name = "cells.zip"
    r = client.post("/import/cells/", {"file": bad, "readers": "match"})
    assert r.status_code == 400 and b"Refused: nothing was imported" in r.content
    assert b"line 2: unknown class &#x27;dragon&#x27;" in r.content and CellImage.objects.count() == 0
    good = io.BytesIO(emptied_export)
    good.name = "cells.zip"
    r = client.post("/import/cells/", {"file": good, "readers": "match"})
    assert r.status_code == 200 and b'id="import-summary"' in r.content
    assert CellImage.objects.count() == 6 and UploadBatch.objects.filter(channel="browser").exists()
    r = client.post("/import/cells/", {"file": io.BytesIO(b"x"), "readers": "one"})
    assert r.status_code == 400 and b"Name the user" in r.content


def test_the_api_imports_once_then_answers_that_nothing_changed(client, emptied_export, lab_admin, labeller):
    def post():
        f = io.BytesIO(emptied_export)
        f.name = "cells.zip"
        return client.post("/api/imports/cells/", {"file": f})
    client.force_login(labeller)
    assert post().status_code == 403
    client.force_login(lab_admin)
    r = post()
    assert r.status_code == 201 and r.json()["images_created"] == 6
    r = post()
    assert r.status_code == 200 and r.json()["images_present"] == 6
    f = io.BytesIO(rewrite(emptied_export, drop=(first_image_path(emptied_export),)))
    f.name = "cells.zip"
    r = client.post("/api/imports/cells/", {"file": f})
    assert r.status_code == 400 and "not in the archive" in " ".join(r.json()["problems"])


def test_an_export_of_this_portal_is_recognised_as_one(tmp_path, demo_cells):
    assert not imports.is_cell_export(demo_cells)
    (tmp_path / "manifest.csv").write_text("x")
    assert imports.is_cell_export(tmp_path) and not imports.is_cell_export(Path(tmp_path / "nothing"))


# --- The lab's rule decides a final label; every attempt is audited ------------------------------------------
def _zip_file(data: bytes) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = "cells.zip"
    return f


WAITS = ("final eosinophil in the export; waits for more readings here "
         "(1 current reading(s); this lab requires 2 for a train cell)")


def test_an_imported_cell_read_once_waits_for_a_second_reader_where_the_lab_requires_two(client, lab, emptied_export,
                                                                                       lab_admin, labeller2):
    """The export's lab required one reading of a training cell; this lab requires two. The cell 'changed'
    (one current reading, final 'by agreement' there) waits here for its second reader, on the page and the API."""
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(labels_required_train=2)
    client.force_login(lab_admin)
    page = client.post("/import/cells/", {"file": _zip_file(emptied_export), "readers": "match"}).content.decode()
    section = re.search(r'<h2 id="redecided">.*?</table>', page, re.S)
    assert section and WAITS in section.group(0) and lab["changed"].sha256[:13] in section.group(0)
    flush_cells()
    r = client.post("/api/imports/cells/", {"file": _zip_file(emptied_export)})
    assert r.status_code == 201
    assert [(c["sha256"], c["reason"]) for c in r.json()["redecided"]] == [(lab["changed"].sha256, WAITS)]
    changed = CellImage.objects.get(sha256=lab["changed"].sha256)
    assert changed.final_label is None and not changed.needs_review and changed.current_label_count == 1
    assert changed in labelling_queue(user=labeller2, queue="unlabelled")
    finals = dict(CellImage.objects.filter(final_label__isnull=False).values_list("sha256", "final_label__code"))
    assert finals == {lab["agreed"].sha256: "lymphocyte", lab["disputed"].sha256: "monocyte",
                      lab["slide_cell"].sha256: "neutrophil_segmented"}
    event = AuditEvent.objects.get(action="image.import", target_id=str(changed.pk))
    assert event.after["final_label"] is None and event.after["export_final_label"] == "eosinophil"


def test_every_import_attempt_is_audited_on_the_page_and_the_api(client, emptied_export, lab_admin):
    client.force_login(lab_admin)
    broken = rewrite(emptied_export, manifest=_set(2, "reader_class", "dragon"))
    assert client.post("/import/cells/", {"file": _zip_file(broken), "readers": "match"}).status_code == 400
    refusal = last_attempt("cells.import_refused")
    assert refusal["channel"] == "browser" and any("unknown class 'dragon'" in p for p in refusal["first_problems"])
    assert client.post("/api/imports/cells/", {"file": _zip_file(b"not a zip")}).status_code == 400
    assert last_attempt("cells.import_refused")["channel"] == "api"
    assert client.post("/api/imports/cells/", {"file": _zip_file(emptied_export)}).status_code == 201
    assert last_attempt()["changed"] is True and last_attempt()["images_created"] == 6
    assert client.post("/api/imports/cells/", {"file": _zip_file(emptied_export)}).status_code == 200
    assert last_attempt()["changed"] is False and last_attempt()["images_present"] == 6
    assert AuditEvent.objects.filter(action__in=("cells.import", "cells.import_refused")).count() == 4
    assert all(e.actor == lab_admin for e in AuditEvent.objects.filter(action__startswith="cells.import"))
    # naming no user to record the classes under refuses the import: audited too (page and API)
    r = client.post("/api/imports/cells/", {"file": _zip_file(emptied_export), "labelled_by": "nobody"})
    assert r.status_code == 400 and r.json()["problems"] == ["labelled_by: No user named 'nobody'."]
    assert last_attempt("cells.import_refused")["first_problems"] == ["No user named 'nobody'."]
    r = client.post("/import/cells/", {"file": _zip_file(emptied_export), "readers": "one", "labelled_by": "nobody"})
    assert r.status_code == 400 and last_attempt("cells.import_refused")["channel"] == "browser"


def _without_columns(*names):
    def change(rows):
        keep = [i for i, c in enumerate(rows[0]) if c not in names]
        return [[r[i] for i in keep] for r in rows]
    return change


def test_each_cell_keeps_its_source_and_a_referred_cells_suggestion_stays_a_best_guess(emptied_export, lab_admin):
    from sources.models import Source as Microscope
    from sources.selectors import source_default

    rows = list(csv.DictReader(io.StringIO(zipfile.ZipFile(io.BytesIO(emptied_export)).read("manifest.csv").decode())))
    assert {r["acquisition_source"] for r in rows} == {source_default().name, "Scope B"}
    assert [r["suggestion_referred"] for r in rows if r["suggested_class"]].count("true") == 1
    assert all(r["suggestion_referred"] == "" for r in rows if not r["suggested_class"])
    # a source this portal does not know: refused whole, naming the line, nothing imported
    scope = Microscope.objects.get(name="Scope B")
    scope.name = "Scope C"
    scope.save()
    with pytest.raises(imports.ImportRefused) as refused:
        do_import(emptied_export, lab_admin)
    line = next(i for i, r in enumerate(rows, start=2) if r["acquisition_source"] == "Scope B")
    assert f"manifest.csv line {line}: acquisition_source 'Scope B' is not a source of this portal" in \
        " ".join(refused.value.problems)
    assert CellImage.objects.count() == 0
    # ... unless one source is given for every new cell
    do_import(emptied_export, lab_admin, acquisition_source="Scope C")
    assert set(CellImage.objects.values_list("acquisition_source__name", flat=True)) == {"Scope C"}
    referred = Label.objects.get(suggestion_referred=True)
    assert referred.suggested_class.code == "monocyte" and referred.cell_class.code == "eosinophil"
    assert not referred.confirmed_model_call


def test_an_export_made_before_the_source_and_referral_columns_imports_as_before(emptied_export, lab_admin):
    from sources.selectors import source_default

    old = rewrite(emptied_export, manifest=_without_columns("acquisition_source", "suggestion_referred"))
    summary = do_import(old, lab_admin)
    assert summary.images_created == 6 and summary.readings_created == 8
    assert set(CellImage.objects.values_list("acquisition_source", flat=True)) == {source_default().pk}
    assert not Label.objects.filter(suggestion_referred=True).exists()


def test_a_referral_flag_needs_a_suggestion(emptied_export, lab_admin):
    def flag_unsuggested(rows):
        at = next(i for i, r in enumerate(rows) if i and r[col("reader")] and not r[col("suggested_class")])
        rows[at][col("suggestion_referred")] = "true"
        return rows
    with pytest.raises(imports.ImportRefused) as refused:
        do_import(rewrite(emptied_export, manifest=flag_unsuggested), lab_admin)
    assert any("suggestion_referred 'true' without a suggested_class" in p for p in refused.value.problems)
