"""The differential's "Model pre-classification agreed … n of m" counts only cells a person verified."""
from annotations.models import CellClass
from slides import services
from slides.models import Slide, SlideCell
from slides.selectors import slide_differential
from tests.factories import CellImageFactory, ModelVersionFactory


def _slide(user, predictions):
    version = ModelVersionFactory(status="active")
    slide = Slide.objects.create(code="MA-1", created_by=user, kind="cells", status="ready", task_state="done",
                                 model_version=version)
    for image, code in zip(CellImageFactory.create_batch(len(predictions), uploaded_by=user), predictions):
        SlideCell.objects.create(slide=slide, image=image, predicted_class=code, top_class=code, confidence=0.9,
                                 model_version=version, final_class=CellClass.objects.get(code=code))
    return slide


def test_model_agreement_counts_verified_cells_only(reviewer):
    slide = _slide(reviewer, ["monocyte", "monocyte", "lymphocyte"])
    before = slide_differential(slide=slide)["model_agreement"]
    assert before == {"agreed": 0, "total": 0, "pre_classified": 3}  # nobody has verified anything yet
    cell = slide.cells.order_by("id").first()
    services.slide_cell_reclassify(cell=cell, actor=reviewer, target="lymphocyte")
    after = slide_differential(slide=slide)["model_agreement"]
    assert after == {"agreed": 0, "total": 1, "pre_classified": 3}
    signed = services.slide_sign(slide=slide, actor=reviewer, reason="three cells: a test")  # signing verifies every cell
    assert signed.report["model_agreement"] == {"agreed": 2, "total": 3, "pre_classified": 3}
    assert slide_differential(slide=signed)["model_agreement"]["total"] == 3
