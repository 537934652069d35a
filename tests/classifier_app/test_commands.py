import json
import shutil

import pytest
from django.core.management import CommandError, call_command

from classifier.models import ModelVersion
from tests.factories import TrainedModelVersionFactory
from tests.helpers import REPO


def test_evaluate_folder_writes_the_contract(active_model, demo_cells, tmp_path, capsys):
    root = tmp_path / "eval"
    for code in ("lymphocyte", "monocyte"):
        (root / code).mkdir(parents=True)
        for f in sorted((demo_cells / code).iterdir())[-3:]:
            shutil.copy(f, root / code / f.name)
    out = tmp_path / "out.json"
    call_command("evaluate_folder", "--model", str(active_model.pk), "--data", str(root), "--json", str(out))
    data = json.loads(out.read_text())
    for key in ("overall_accuracy", "per_class", "confusion_matrix", "per_backbone", "abstained",
                "accuracy_on_accepted", "cells_per_second"):
        assert key in data
    assert sum(map(sum, data["confusion_matrix"]["matrix"])) == 6
    assert data["confusion_matrix"]["rows"] == "actual"
    for code in ("lymphocyte", "monocyte"):
        c = data["per_class"][code]
        assert c["support"] == 3
        assert set(c) == {"accuracy", "sensitivity", "specificity", "misdiagnosis_rate", "support"}
    assert set(data["per_backbone"]) == {"efficientnet_lite0"}
    assert 0 <= data["overall_accuracy"] <= 1
    # every referral counted in "abstained", out-of-distribution ones also apart; accuracy over the rest
    assert data["ood_flagged"] is not None and 0 <= data["ood_flagged"] <= data["abstained"] <= 6
    assert set(data["referred_by_reason"]) == {"out_of_distribution", "batch_unlike", "neighbours_disagree", "thin_support",
                                                "split_vote", "low_confidence"}
    assert data["referred_by_reason"]["out_of_distribution"] == data["ood_flagged"]
    assert 0 <= data["accepted_and_wrong"] <= 1


def test_classify_command_json(active_model, demo_cells, tmp_path):
    files = [str(p) for p in sorted((demo_cells / "monocyte").iterdir())[:2]]
    out = tmp_path / "c.json"
    call_command("classify", *files, "--model", "active", "--json", str(out))
    rows = json.loads(out.read_text())["results"]
    assert [r["file"] for r in rows] == files
    assert all(r["agreement"].endswith("/1") and "efficientnet_lite0" in r["votes"] for r in rows)
    assert json.loads(out.read_text())["ood_checked"] is True
    for r in rows:
        assert isinstance(r["ood_score"], float) and r["abstained"] == bool(r["reasons"])
        assert r["out_of_distribution"] == ("out_of_distribution" in r["reasons"])
        assert (r["reason"] is None) == (not r["abstained"])


def test_classify_reports_a_foreign_cell_as_referred_with_its_reason_and_score(db, pbc_checkpoint, tmp_path):
    """A white cell cropped from a BCCD field (another microscope and stain) against a model
    trained on PBC cells: referred, 'unlike the training images', with its score."""
    from PIL import Image

    from slides.pipeline import find_cells

    TrainedModelVersionFactory(result=pbc_checkpoint, activate=True)

    field = sorted((REPO / "demo" / "fields").glob("*.jpg"))[0]
    crop = tmp_path / "foreign.png"
    next(c for c in find_cells(Image.open(field)).cells if c.needs_model).crop.save(crop)
    out = tmp_path / "f.json"
    call_command("classify", str(crop), "--model", "active", "--json", str(out))
    (row,) = json.loads(out.read_text())["results"]
    assert row["abstained"] and row["class"] == "unidentified" and row["out_of_distribution"]
    assert "unlike the training images" in row["reason"] and row["ood_score"] > 0


def test_commands_explain_a_missing_model(db, tmp_path):
    with pytest.raises(CommandError, match="No model version is active"):
        call_command("classify", str(tmp_path / "x.jpg"))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("evaluate_folder", "--model", "999", "--data", str(tmp_path), "--json", str(tmp_path / "o.json"))


def test_import_weights_refuses_a_wrong_file(tmp_path, monkeypatch, db):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bad = tmp_path / "resnet50.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(CommandError, match="resnet50"):
        call_command("import_weights", "resnet50", str(bad))
    assert not (tmp_path / "torch" / "hub" / "checkpoints").exists() or not any((tmp_path / "torch" / "hub" / "checkpoints").iterdir())


@pytest.mark.slow
def test_train_ensemble_registers_a_version_and_prints_its_id(db, demo_cells, tmp_path, capsys):
    root = tmp_path / "train"
    for code in ("basophil", "eosinophil"):
        (root / code).mkdir(parents=True)
        for f in sorted((demo_cells / code).iterdir())[:4]:
            shutil.copy(f, root / code / f.name)
    call_command("train_ensemble", "--data", str(root), "--mode", "frozen", "--epochs", "2", "--activate")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    version = ModelVersion.objects.get(pk=int(last))
    assert version.status == "active" and version.ensemble == "offline"
    assert version.backbones == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert len(version.snapshot["items"]) == 8 and len(version.checkpoint_sha256) == 64


def test_train_ensemble_rejects_unknown_folders(db, tmp_path):
    (tmp_path / "blasts").mkdir()
    (tmp_path / "blasts" / "a.jpg").write_bytes(b"x")
    with pytest.raises(CommandError, match="Unknown class folder"):
        call_command("train_ensemble", "--data", str(tmp_path))
