"""The threshold a version applies: one home (classifier.selectors.threshold_applied) that
classification, the model-versions API and page, and the training run page read; never 0."""
import importlib

import pytest
from django.apps import apps
from pytest_django.asserts import assertInHTML

from annotations.models import LabSettings
from annotations.services import image_upload
from classifier.ml.reasons import LOW_CONFIDENCE
from classifier.ml.voting import DEFAULT, DEFAULT_THRESHOLD
from classifier.models import ModelVersion, Prediction
from classifier.selectors import threshold_applied
from classifier.services import images_classify
from tests.factories import ModelVersionFactory


def _api_row(client, version) -> dict:
    rows = client.get("/api/model-versions/").json()["results"]
    return next(r for r in rows if r["id"] == version.pk)


def test_a_version_trained_on_few_cells_stores_and_applies_the_conservative_default(active_model):
    assert active_model.default_threshold == DEFAULT_THRESHOLD > 0
    assert active_model.threshold_source == DEFAULT and "validation cells" in active_model.threshold_why
    applied = threshold_applied(active_model)
    assert (applied.value, applied.source, applied.min_agreement) == (DEFAULT_THRESHOLD, DEFAULT, 1)


def test_the_api_and_the_versions_page_show_the_threshold_applied(client, reviewer, active_model):
    client.force_login(reviewer)
    row = _api_row(client, active_model)
    assert row["default_threshold"] == DEFAULT_THRESHOLD and row["threshold_source"] == DEFAULT
    assert row["threshold"]["value"] == DEFAULT_THRESHOLD and row["threshold"]["source"] == DEFAULT
    assert row["threshold"]["why"] == active_model.threshold_why and row["threshold"]["min_agreement"] == 1
    page = client.get("/models/").content.decode()
    assertInHTML(f'<td class="threshold" data-threshold="{DEFAULT_THRESHOLD}"><strong>{DEFAULT_THRESHOLD:.2f}</strong>, 1 of 1 backbones '
                 f'agreeing<br><small class="muted">{active_model.threshold_why}</small></td>', page)

    # the lab sets its own: that is what every version applies now; each keeps its own beside it
    LabSettings.objects.filter(pk=1).update(abstain_threshold=0.72)
    row = _api_row(client, active_model)
    assert row["threshold"]["value"] == 0.72 and row["threshold"]["source"] == "lab settings"
    assert row["default_threshold"] == DEFAULT_THRESHOLD
    page = client.get("/models/").content.decode()
    assertInHTML('<td class="threshold" data-threshold="0.72"><strong>0.72</strong>, 1 of 1 backbones agreeing'
                 '<br><small class="muted">set in the lab\'s settings</small></td>', page)


def test_a_bare_version_row_never_has_threshold_zero(db):
    version = ModelVersionFactory(status="candidate", backbones=["efficientnet_lite0"])
    assert threshold_applied(version).value == DEFAULT_THRESHOLD


def test_classification_refers_exactly_the_cells_under_the_threshold_applied(active_model, labeller, demo_cells):
    paths = [p for code in ("eosinophil", "monocyte", "platelet") for p in sorted((demo_cells / code).iterdir())[:4]]
    ids = [image_upload(data=p.read_bytes(), uploaded_by=labeller, enqueue_classification=False).image.pk
           for p in paths]
    images_classify(image_ids=ids, model_version_id=active_model.pk)
    preds = list(Prediction.objects.filter(model_version=active_model))
    assert len(preds) == len(ids)
    for p in preds:
        assert (LOW_CONFIDENCE in p.reasons) == (p.confidence < DEFAULT_THRESHOLD), (p.confidence, p.reasons)
    assert any(LOW_CONFIDENCE in p.reasons for p in preds), "the tiny model is unsure of some cells"


def test_the_migration_gives_earlier_versions_the_threshold_their_checkpoint_applies(db):
    migration = importlib.import_module("classifier.migrations.0006_every_version_has_a_threshold")
    # what the demo's first model stored: 0.0, fitted on 9 validation cells all right at threshold 0
    curve = [{"threshold": 0.0, "accuracy_accepted": 1.0, "referred": 0.0, "accepted": 9}]
    old = ModelVersion.objects.create(ensemble="offline", status="active", default_threshold=0.0, threshold_source="",
                                      metrics={"n_val": 9, "abstention_curve": curve}, config={})
    migration.thresholds_of_earlier_versions(apps, None)
    old.refresh_from_db()
    assert (old.default_threshold, old.threshold_source) == (DEFAULT_THRESHOLD, DEFAULT)
    assert "9 validation cells" in old.threshold_why


@pytest.mark.parametrize("lab_agreement", [0, 1])
def test_the_agreement_rule_applied_is_the_labs_else_a_strict_majority(db, lab_agreement):
    LabSettings.objects.filter(pk=1).update(min_agreement=lab_agreement)
    version = ModelVersionFactory(backbones=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    assert threshold_applied(version).min_agreement == (lab_agreement or 2)
