"""The model sits a test whose cells it has not classified yet: a real Celery worker classifies them
with the tiny checkpoint, and the sitting is then scored on its calls like a person's answers."""
import pytest

from classifier.models import Prediction
from competency import services
from competency.scoring import NOT_CALLED
from tests.competency.conftest import decided_lab
from tests.helpers import wait_for


@pytest.mark.worker
def test_the_active_model_sits_a_test_once_a_real_worker_has_classified_its_cells(celery_worker_process, active_model,
                                                                                  lab_admin):
    decided_lab(uploaded_by=lab_admin)
    test = services.test_create(actor=lab_admin, name="T", size=6, class_minimums={"lymphocyte": 3, "monocyte": 3},
                                pass_min_agreement=0.5, critical_classes=[], seed=2)
    image_ids = list(test.cells.values_list("image_id", flat=True))
    assert not Prediction.objects.filter(image_id__in=image_ids).exists()
    sitting = services.model_sit(actor=lab_admin, test=test, model_version=active_model)
    assert sitting.result is None  # queued for the worker after the commit
    wait_for(lambda: Prediction.objects.filter(image_id__in=image_ids, model_version=active_model).count() == 6,
             timeout=120, message="the worker to classify the test's cells")
    sitting = services.model_sit(actor=lab_admin, test=test, model_version=active_model)
    r = sitting.result
    predictions = {p.image_id: p for p in Prediction.objects.filter(image_id__in=image_ids)}
    expected = sum(1 for c in test.cells.select_related("reference")
                   if not predictions[c.image_id].abstained and predictions[c.image_id].top_class == c.reference.code)
    assert (r["n"], r["correct"]) == (6, expected)
    assert r["referred"] == sum(p.abstained for p in predictions.values())
    assert sum(row[-1] for row in r["confusion"]) == r["referred"]  # referrals under "(not called)"
    assert r["matrix_labels"][-1] == NOT_CALLED
    assert set(sitting.calls) == {str(p) for p in range(1, 7)}
