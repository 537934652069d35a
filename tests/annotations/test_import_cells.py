import shutil

import pytest
from django.core.management import CommandError, call_command

from annotations.models import AuditEvent, CellImage, Label


def _small_tree(tmp_path, demo_cells, per_class=2, classes=("lymphocyte", "monocyte", "eosinophil")):
    root = tmp_path / "tree"
    for code in classes:
        (root / code).mkdir(parents=True)
        for f in sorted((demo_cells / code).iterdir())[:per_class]:
            shutil.copy(f, root / code / f.name)
    return root


def test_import_cells_imports_with_labels_and_reimport_changes_nothing(tmp_path, demo_cells, labeller, capsys):
    root = _small_tree(tmp_path, demo_cells)
    call_command("import_cells", str(root), "--split", "train", "--labelled-by", "lab1", "--no-progress")
    assert CellImage.objects.count() == 6
    assert Label.objects.count() == 6
    assert set(CellImage.objects.values_list("final_label__code", flat=True)) == {"lymphocyte", "monocyte", "eosinophil"}
    assert all(label.labeller == labeller for label in Label.objects.all())
    events, labels = AuditEvent.objects.count(), Label.objects.count()
    call_command("import_cells", str(root), "--split", "train", "--labelled-by", "lab1", "--no-progress")
    assert CellImage.objects.count() == 6 and Label.objects.count() == labels
    # the attempt that wrote nothing is audited too, and is all that was written
    assert AuditEvent.objects.count() == events + 1
    attempt = AuditEvent.objects.first()
    assert (attempt.action, attempt.target_type, attempt.target_id) == ("batch.import", "Import", "folder")
    assert attempt.after["changed"] is False and attempt.after["duplicates"] == 6 and attempt.after["stored"] == 0
    assert "stored 0, duplicates 6, labels 0" in capsys.readouterr().out


def test_unknown_folder_lists_known_codes_and_imports_nothing(tmp_path, demo_cells, db):
    root = _small_tree(tmp_path, demo_cells)
    (root / "blast_cell").mkdir()
    with pytest.raises(CommandError) as exc:
        call_command("import_cells", str(root), "--split", "train", "--no-progress")
    assert "blast_cell" in str(exc.value) and "neutrophil_band" in str(exc.value)
    assert CellImage.objects.count() == 0
    # the refused attempt is audited, with its reason, though nothing was imported
    refusal = AuditEvent.objects.get()
    assert (refusal.action, refusal.target_type, refusal.target_id) == ("cells.import_refused", "Import", "folder")
    assert refusal.after["channel"] == "cli" and "blast_cell" in refusal.after["first_problems"][0]


def test_heldout_import_needs_a_second_reader(tmp_path, demo_cells, labeller, labeller2):
    root = _small_tree(tmp_path, demo_cells, per_class=1, classes=("basophil",))
    call_command("import_cells", str(root), "--split", "heldout", "--labelled-by", "lab1", "--no-progress")
    image = CellImage.objects.get()
    assert image.split == "heldout" and image.final_label is None
    call_command("import_cells", str(root), "--split", "heldout", "--labelled-by", "lab2", "--no-progress")
    image.refresh_from_db()
    assert image.final_label.code == "basophil"


def test_import_refreshes_the_planner_statistics_of_cells_and_labels(tmp_path, demo_cells, labeller):
    """Without them PostgreSQL plans the labelling queues for empty tables (nested loops)."""
    from django.db import connection

    root = _small_tree(tmp_path, demo_cells)
    call_command("import_cells", str(root), "--split", "train", "--labelled-by", "lab1", "--no-progress")
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reltuples FROM pg_class WHERE relname IN (%s, %s)",
                       [CellImage._meta.db_table, Label._meta.db_table])
        assert dict(cursor.fetchall()) == {CellImage._meta.db_table: 6, Label._meta.db_table: 6}


def test_naming_no_user_refuses_the_import_and_the_refusal_is_audited(tmp_path, demo_cells, db):
    root = _small_tree(tmp_path, demo_cells, per_class=1, classes=("basophil",))
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("import_cells", str(root), "--labelled-by", "nobody", "--no-progress")
    refusal = AuditEvent.objects.get()
    assert (refusal.action, refusal.target_id, refusal.after["first_problems"]) == (
        "cells.import_refused", "folder", ["No user named 'nobody'."])
    assert CellImage.objects.count() == 0
