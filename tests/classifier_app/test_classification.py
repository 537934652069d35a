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


def test_every_cell_of_a_source_the_version_never_trained_on_is_referred_with_its_best_guess(
        tiny_checkpoint, labeller, demo_cells):
    """A new microscope's cells are referred whatever the model calls them (the out-of-distribution
    check alone lets a few through); once a version has trained on cells of that source it calls them
    again. The lab's default source is its own microscope: its cells are called as before."""
    from tests.factories import SourceFactory, TrainedModelVersionFactory

    scope = SourceFactory(name="Scope B")
    paths = sorted((demo_cells / "lymphocyte").iterdir())[:4]
    home = [image_upload(data=p.read_bytes(), uploaded_by=labeller, enqueue_classification=False).image
            for p in paths[:2]]
    new = [image_upload(data=p.read_bytes(), uploaded_by=labeller, enqueue_classification=False,
                        acquisition_source=scope).image for p in paths[2:]]
    ids = [i.pk for i in home + new]

    never = TrainedModelVersionFactory(result=tiny_checkpoint, activate=True,
                                       snapshot={"items": [[home[0].pk, home[0].sha256, "lymphocyte"]]})
    images_classify(image_ids=ids, model_version_id=never.pk)
    called = {p.image_id: p for p in Prediction.objects.filter(model_version=never)}
    for image in new:
        p = called[image.pk]
        assert p.abstained and p.label == "unidentified" and "new_source" in p.reasons
        assert p.top_class in never.classes  # the best guess is kept
        assert "a source the model was not trained on" in p.reason
    assert all("new_source" not in called[i.pk].reasons for i in home)

    trained = TrainedModelVersionFactory(result=tiny_checkpoint, folder="trained",
                                         snapshot={"items": [[new[0].pk, new[0].sha256, "lymphocyte"]]})
    images_classify(image_ids=ids, model_version_id=trained.pk)
    assert not any("new_source" in p.reasons for p in Prediction.objects.filter(model_version=trained))
