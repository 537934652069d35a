import pytest

from annotations.services import image_upload
from classifier.models import Prediction
from classifier.services import images_classify
from tests.helpers import jpeg_bytes, wait_for


def test_classify_is_idempotent_and_stores_votes(active_model, labeller, demo_cells):
    ids = [
        image_upload(data=p.read_bytes(), uploaded_by=labeller, enqueue_classification=False).image.pk
        for p in sorted((demo_cells / "monocyte").iterdir())[:3]
    ]
    assert images_classify(image_ids=ids, model_version_id=active_model.pk) == 3
    assert images_classify(image_ids=ids, model_version_id=active_model.pk) == 0
    preds = Prediction.objects.filter(model_version=active_model)
    assert preds.count() == 3
    for p in preds:
        assert p.top_class in active_model.classes
        assert set(p.per_backbone) == set(active_model.backbones)
        assert abs(sum(p.probabilities.values()) - 1) < 1e-3
        assert 1 <= p.agreement <= p.n_backbones == len(active_model.backbones)
        assert (p.label == "unidentified") == p.abstained


@pytest.mark.worker
def test_new_upload_is_classified_by_a_real_worker(celery_worker_process, active_model, labeller, demo_cells):
    from django.db import transaction

    path = sorted((demo_cells / "lymphocyte").iterdir())[0]
    with transaction.atomic():
        image = image_upload(data=path.read_bytes(), uploaded_by=labeller).image
    wait_for(lambda: Prediction.objects.filter(image=image, model_version=active_model).exists(),
             timeout=90, message="the worker to classify the upload")
    # A second delivery of the same work adds nothing.
    from classifier.tasks import classify_images

    classify_images.delay([image.pk], active_model.pk)
    other = image_upload(data=jpeg_bytes(), uploaded_by=labeller)
    wait_for(lambda: Prediction.objects.filter(image=other.image).exists(), timeout=90, message="second upload")
    assert Prediction.objects.filter(image=image, model_version=active_model).count() == 1
