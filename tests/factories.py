"""Rows for the tests (factory_boy): users in a role, cell images stored the way an upload stores
them, predictions, and model versions (bare rows, or registered from a trained checkpoint)."""
import shutil
from dataclasses import replace
from pathlib import Path

import factory
from django.conf import settings
from django.contrib.auth.models import Group

from annotations.models import CellClass, CellImage, Split
from annotations.services import image_upload
from classifier.models import ModelVersion, Prediction
from classifier.services import model_version_activate, model_version_from_training
from leukoportal.roles import LAB_ADMIN, LABELLER, REVIEWER
from sources.models import Source
from tests.helpers import PASSWORD, png_bytes


def cell_class(code: str) -> CellClass:
    """A class of the seeded taxonomy, by its code."""
    return CellClass.objects.get(code=code)


class UserFactory(factory.django.DjangoModelFactory):
    """A user with the test password; ``role`` (or a trait: ``labeller=True``…) puts them in that
    role's group, and a lab admin is staff."""

    class Meta:
        model = settings.AUTH_USER_MODEL

    username = factory.Sequence(lambda n: f"user{n}")
    password = PASSWORD
    role = None
    is_staff = factory.LazyAttribute(lambda o: o.role == LAB_ADMIN)

    class Params:
        labeller = factory.Trait(role=LABELLER)
        reviewer = factory.Trait(role=REVIEWER)
        lab_admin = factory.Trait(role=LAB_ADMIN)

    @classmethod
    def _create(cls, model_class, *args, role=None, **kwargs):
        user = model_class._default_manager.create_user(*args, **kwargs)
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user


class SourceFactory(factory.django.DjangoModelFactory):
    """A named, active source (microscope/camera) of the lab, not the default."""

    class Meta:
        model = Source

    name = factory.Sequence(lambda n: f"Microscope {n}")


class CellImageFactory(factory.Factory):
    """A small plain PNG uploaded through the upload service (de-identified, stored under its
    sha256), not queued for classification. Each image has its own colour, hence its own sha256."""

    class Meta:
        model = CellImage

    uploaded_by = factory.SubFactory(UserFactory, role=LAB_ADMIN)
    split = Split.TRAIN
    data = factory.LazyAttribute(lambda o: png_bytes(o.color, size=o.size))

    class Params:
        color = factory.Sequence(lambda n: (n % 256, n // 256 % 256, 7))
        size = (32, 32)  # annotations.imaging.MIN_IMAGE_SIDE: the smallest image stored

    @classmethod
    def _create(cls, model_class, *, data, **kwargs):
        return image_upload(data=data, enqueue_classification=False, **kwargs).image


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A model version row with no checkpoint behind it."""

    class Meta:
        model = ModelVersion

    ensemble = "offline"


class TrainedModelVersionFactory(factory.Factory):
    """A model version registered from a trained checkpoint (``result``, a session's training
    result), copied under this test's MODEL_DIR/``folder``; a candidate, or active with ``activate``."""

    class Meta:
        model = ModelVersion

    result = None
    folder = "tiny"
    ensemble = "tiny"
    mode = "frozen"
    snapshot = factory.LazyFunction(lambda: {"items": []})
    created_by = None
    activate = False

    @classmethod
    def _create(cls, model_class, *, result, folder, activate, **kwargs):
        dest = Path(settings.MODEL_DIR) / folder
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / Path(result.checkpoint_path).name
        shutil.copy2(result.checkpoint_path, path)
        version = model_version_from_training(result=replace(result, checkpoint_path=path), **kwargs)
        return model_version_activate(version=version) if activate else version


class PredictionFactory(factory.django.DjangoModelFactory):
    """One backbone's vote on an image; an abstention is labelled 'unidentified' (for low
    confidence unless ``reasons`` says otherwise)."""

    class Meta:
        model = Prediction

    image = factory.SubFactory(CellImageFactory)
    model_version = factory.SubFactory(ModelVersionFactory, status=ModelVersion.Status.ACTIVE)
    top_class = "monocyte"
    confidence = 0.9
    abstained = False
    label = factory.LazyAttribute(lambda o: "unidentified" if o.abstained else o.top_class)
    reasons = factory.LazyAttribute(lambda o: ["low_confidence"] if o.abstained else [])
    agreement = 1
    n_backbones = 1
    ood_score = None


class SlideFactory(factory.django.DjangoModelFactory):
    """A slide of fields, processed (ready for verification); its fields and cells are built apart."""

    class Meta:
        model = "slides.Slide"

    code = factory.Sequence(lambda n: f"F-{n:04d}")
    created_by = factory.SubFactory(UserFactory, role=REVIEWER)
    status = "ready"
    task_state = "done"


class SlideFieldFactory(factory.django.DjangoModelFactory):
    """A field of ``slide`` already looked at for platelets (``platelet_count``) and red cells."""

    class Meta:
        model = "slides.SlideField"

    slide = factory.SubFactory(SlideFactory)
    image = factory.SubFactory(CellImageFactory)
    position = factory.Sequence(lambda n: n)
    detected = True
    platelet_count = 1
    red_cell_count = 100


class SlideCellFactory(factory.django.DjangoModelFactory):
    """A counted cell of ``slide`` with its final class (``final_class``: a class code), verified by
    ``changed_by`` (None: the model's call, nobody has verified it)."""

    class Meta:
        model = "slides.SlideCell"

    slide = factory.SubFactory(SlideFactory)
    image = factory.SubFactory(CellImageFactory)
    detector_kind = "wbc"
    final_class = factory.LazyFunction(lambda: cell_class("lymphocyte"))
    changed_by = None


def verified_slide(*, created_by, code: str = "REL-1", classes=("monocyte", "lymphocyte", "lymphocyte"),
                   target_count: int = 100):
    """A slide of cropped cells, one per class in ``classes``, each pre-classified and given its final
    class: processed and verified, ready to sign (or submit) without a worker."""
    from slides.models import Slide, SlideCell

    version = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    slide = Slide.objects.create(code=code, created_by=created_by, kind=Slide.Kind.CELLS, status=Slide.Status.VERIFIED,
                                 task_state=Slide.TaskState.DONE, model_version=version, target_count=target_count)
    for image, code_ in zip(CellImageFactory.create_batch(len(classes), uploaded_by=created_by), classes):
        SlideCell.objects.create(slide=slide, image=image, predicted_class=code_, top_class=code_, confidence=0.9,
                                 model_version=version, final_class=CellClass.objects.get(code=code_))
    return slide
