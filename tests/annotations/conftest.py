import pytest

from tests.annotations.lab_data import make_lab_data
from tests.factories import ModelVersionFactory


@pytest.fixture
def active_model_row(db):
    """An active ModelVersion row with no checkpoint behind it (for tests of what the pages show of its
    predictions); ``active_model`` in tests/conftest.py is a real, loadable tiny ensemble."""
    return ModelVersionFactory(status="active", classes=["lymphocyte", "monocyte"], backbones=["efficientnet_lite0"])


@pytest.fixture
def lab(labeller, labeller2, reviewer):
    """A small lab's cells in every state an export carries (tests/annotations/lab_data.py)."""
    return make_lab_data(labeller=labeller, labeller2=labeller2, reviewer=reviewer)
