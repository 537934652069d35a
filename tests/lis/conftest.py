import pytest

from tests.lis.peers import FhirServer, MllpLis


@pytest.fixture
def mllp_lis():
    lis = MllpLis().start()
    yield lis
    lis.close()


@pytest.fixture
def fhir_server():
    server = FhirServer()
    yield server
    server.close()


@pytest.fixture
def order_codes(db):
    """The default order-code mapping (the migration's; a transactional test flushes it)."""
    from lis.models import OrderCode

    OrderCode.objects.get_or_create(code="WBCDIFF", coding_system="")
    OrderCode.objects.get_or_create(code="57021-8", coding_system="LN")


def mllp_destination(port: int, **extra):
    from lis.models import Destination

    values = dict(name="Main LIS", kind=Destination.Kind.HL7_MLLP, host="127.0.0.1", port=port,
                  receiving_application="LABLIS", receiving_facility="HOSP", timeout_s=1.0, max_attempts=5,
                  backoff_s=0.2, backoff_max_s=1.0)
    values.update(extra)
    return Destination.objects.create(**values)


def fhir_destination(url: str, **extra):
    from lis.models import Destination

    values = dict(name="FHIR LIS", kind=Destination.Kind.FHIR, base_url=url, bearer_token="s3cret", timeout_s=1.0,
                  max_attempts=5, backoff_s=0.2, backoff_max_s=1.0)
    values.update(extra)
    return Destination.objects.create(**values)


def signed(code: str, *, by):
    """A slide of three cropped cells, signed by ``by`` (below its target: signed with a reason)."""
    from annotations.models import CellClass
    from classifier.models import ModelVersion
    from slides import services
    from slides.models import Slide, SlideCell
    from tests.factories import CellImageFactory, ModelVersionFactory

    version = (ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
               or ModelVersionFactory(status=ModelVersion.Status.ACTIVE))
    slide = Slide.objects.create(code=code, created_by=by, kind=Slide.Kind.CELLS, status=Slide.Status.VERIFIED,
                                 task_state=Slide.TaskState.DONE, model_version=version)
    for image, class_code in zip(CellImageFactory.create_batch(3, uploaded_by=by), ("monocyte", "lymphocyte", "lymphocyte")):
        SlideCell.objects.create(slide=slide, image=image, predicted_class=class_code, top_class=class_code,
                                 confidence=0.9, model_version=version, final_class=CellClass.objects.get(code=class_code))
    return services.slide_sign(slide=slide, actor=by, reason="a short count for the test")


def corrected(slide, *, by, reason="a lymphocyte was a monocyte"):
    """Correct a signed slide and sign the new version."""
    from slides import services
    from slides.models import Slide

    new = services.slide_correct(slide=slide, actor=by, reason=reason)
    return services.slide_sign(slide=Slide.objects.get(pk=new.pk), actor=by, reason="a short count for the test")
