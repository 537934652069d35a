"""The share of cells unlike the training images, by week and by version, beside the agreement trend."""
from django.urls import reverse

from classifier.models import ModelVersion, Prediction
from reports.selectors import ood_share_over_time
from tests.factories import CellImageFactory, ModelVersionFactory


def _predict(image, version, *, ood: bool, score: float | None = 0.0):
    reasons = ["out_of_distribution"] if ood else []
    return Prediction.objects.create(image=image, model_version=version, label="unidentified" if ood else "monocyte",
                                     top_class="monocyte", confidence=0.9, agreement=3, n_backbones=3,
                                     abstained=ood, reasons=reasons, ood_score=score)


def test_the_share_of_foreign_cells_is_shown_by_week_and_version_with_unchecked_versions_named(
        client, reviewer, lab_admin):
    scored = ModelVersionFactory(status=ModelVersion.Status.ACTIVE,
                                 metrics={"ood": {"expected_rate": 0.025}})
    old = ModelVersionFactory(status=ModelVersion.Status.RETIRED)
    images = CellImageFactory.create_batch(10, uploaded_by=lab_admin)
    for i, image in enumerate(images):
        _predict(image, scored, ood=i < 4, score=5.0 if i < 4 else 0.1)  # 4 of 10 foreign
        _predict(image, old, ood=False, score=None)  # no score: not counted, but named
    data = ood_share_over_time()
    (week,) = data["by_week"]
    assert week["n"] == 10 and week["ood"] == 4 and week["share"] == 0.4
    lo, hi = week["ci"]
    assert lo < 0.4 < hi
    (version,) = data["by_version"]
    assert version["key"] == scored.pk and version["expected"] == 0.025
    assert data["unchecked_versions"] == [old.pk]
    client.force_login(reviewer)
    page = client.get(reverse("reports:agreement")).content.decode()
    assert 'id="ood-by-week"' in page and "40.0%" in page and "2.5%" in page
    assert f"v{old.pk}" in page.split('id="ood-unchecked"')[1]
