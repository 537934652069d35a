import pytest

from annotations.models import CellClass
from annotations.services import image_upload
from tests.conftest import png_bytes


def cls(code: str) -> CellClass:
    return CellClass.objects.get(code=code)


def make_cells(user, n: int, *, split: str = "train", seed: int = 0) -> list:
    return [
        image_upload(data=png_bytes((seed, i, 7), size=(24, 24)), uploaded_by=user, split=split,
                     enqueue_classification=False).image
        for i in range(n)
    ]


@pytest.fixture
def active_model_row(db):
    """An active ModelVersion row with no checkpoint behind it (for tests of what the pages show of its
    predictions); ``active_model`` in tests/conftest.py is a real, loadable tiny ensemble."""
    from classifier.models import ModelVersion

    return ModelVersion.objects.create(ensemble="offline", status=ModelVersion.Status.ACTIVE,
                                       classes=["lymphocyte", "monocyte"], backbones=["efficientnet_lite0"])


def predict(image, version, code: str, confidence: float, abstained: bool = False, reasons=None,
            ood_score: float | None = None):
    from classifier.models import Prediction

    if abstained and reasons is None:
        reasons = ["low_confidence"]
    return Prediction.objects.create(
        image=image, model_version=version, label="unidentified" if abstained else code, top_class=code,
        confidence=confidence, agreement=1, n_backbones=1, abstained=abstained, reasons=reasons or [],
        ood_score=ood_score,
    )
