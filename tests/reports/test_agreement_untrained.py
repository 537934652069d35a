"""Agreement over time counts only cells the version never trained on; the training cells apart."""
from django.urls import reverse

from annotations.models import CellClass, CellImage
from classifier.models import Prediction
from reports.selectors import agreement_over_time
from tests.factories import ModelVersionFactory
from tests.helpers import png_bytes
from tests.reports import factories


def _predict(image, version, code):
    return Prediction.objects.create(image=image, model_version=version, label=code, top_class=code,
                                     confidence=0.9, agreement=1, n_backbones=1)


def test_agreement_leaves_out_the_cells_a_version_trained_on(client, reviewer, lab_admin, cells, good_version):
    trained = cells["train"][:5]  # in good_version's training snapshot
    for image in trained:
        _predict(image, good_version, image.final_label.code)  # agrees with its own training labels
    held = cells["heldout"][0]
    wrong = "lymphocyte" if held.final_label.code != "lymphocyte" else "eosinophil"
    _predict(held, good_version, wrong)
    (late,) = factories.store_cells([(factories.cell_png("eosinophil", 99), "eosinophil")], split="train",
                                    user=lab_admin)  # labelled after the snapshot
    _predict(late, good_version, "eosinophil")
    assert late.pk not in [row[0] for row in good_version.snapshot["items"]]

    data = agreement_over_time()
    (row,) = data["by_version"]["rows"]
    assert row["key"] == good_version.pk and row["overall"] == {"n": 2, "agree": 1, "rate": 0.5}
    (week,) = data["by_week"]["rows"]
    assert week["overall"] == {"n": 2, "agree": 1, "rate": 0.5}
    (apart,) = data["trained_by_version"]["rows"]
    assert apart["overall"] == {"n": 5, "agree": 5, "rate": 1.0}

    client.force_login(reviewer)
    page = client.get(reverse("reports:agreement")).content.decode()
    assert "Only cells the model version never trained on are counted" in page
    assert 'id="agreement-trained"' in page
    header = page.split('id="agreement-by-version"')[1].split("</thead>")[0]
    assert "Eosinophil" in header and ">eosinophil<" not in header


def test_a_cell_moved_out_of_training_still_counts_as_trained(cells, good_version):
    image = cells["train"][0]
    CellImage.objects.filter(pk=image.pk).update(split="heldout")  # moved after the version trained on it
    _predict(image, good_version, image.final_label.code)
    data = agreement_over_time()
    assert data["by_version"]["rows"] == []
    assert data["trained_by_version"]["rows"][0]["overall"]["n"] == 1


def test_unverified_slide_cells_do_not_count(db, lab_admin):
    from annotations.services import image_upload
    from classifier.models import ModelVersion
    from slides.models import Slide, SlideCell

    version = ModelVersionFactory(status="candidate")
    slide = Slide.objects.create(code="S-2", created_by=lab_admin, kind="cells")
    mono = CellClass.objects.get(code="monocyte")
    for i in range(3):
        image = image_upload(data=png_bytes(color=(i, 20, 10)), uploaded_by=lab_admin, source="slide_cell",
                             enqueue_classification=False).image
        # the final class of a cell nobody checked is the model's own call
        SlideCell.objects.create(slide=slide, image=image, top_class="monocyte", predicted_class="monocyte",
                                 model_version=version, final_class=mono)
    assert agreement_over_time(source="slide_cell")["by_version"]["rows"] == []
    Slide.objects.filter(pk=slide.pk).update(status=Slide.Status.SIGNED)  # signing verifies every cell
    assert agreement_over_time(source="slide_cell")["by_version"]["rows"][0]["overall"]["n"] == 3
