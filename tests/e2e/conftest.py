import pytest

from annotations.models import LabSettings
from tests.factories import TrainedModelVersionFactory


@pytest.fixture
def every_cell_to_the_expert(tiny_checkpoint, celery_worker_process, reference_intervals):
    """A real worker with the tiny checkpoint active, and a threshold no cell reaches: every cell
    of a processed slide waits for the expert."""
    TrainedModelVersionFactory(result=tiny_checkpoint, activate=True)
    LabSettings.objects.update(abstain_threshold=0.99)
