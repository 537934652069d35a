"""In headless Chromium: a model trained on the demo cells refers the cells it is unsure of. Its
validation split (9 cells) is too small to fit a threshold, so it applies the conservative default
(before, it applied 0 and accepted "Platelet 21 %" on an erythroblast); the labelling grid shows
such a cell as unidentified, referred for low confidence, and the model versions page shows the
threshold applied."""
import pytest
from playwright.sync_api import expect

from annotations.models import CellClass, Split
from annotations.services import image_upload
from classifier.ml.reasons import LOW_CONFIDENCE
from classifier.ml.voting import DEFAULT_THRESHOLD
from classifier.models import Prediction
from classifier.services import images_classify
from tests.factories import TrainedModelVersionFactory, UserFactory
from tests.helpers import logged_in_page, pbc_split, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _call(prediction, names) -> str:
    share = f"{round(prediction.confidence * 100)}%"
    name = names[prediction.top_class]
    return f"model: referred (best guess {name} {share})" if prediction.abstained else f"model: {name} {share}"


def test_a_model_trained_on_the_demo_cells_refers_a_low_confidence_cell(browser, live_server, pbc_checkpoint):
    admin = UserFactory(username="admin1", role="lab_admin")
    UserFactory(username="lab1", role="labeller")
    UserFactory(username="rev1", role="reviewer")
    version = TrainedModelVersionFactory(result=pbc_checkpoint, folder="demo", ensemble="offline", mode="default",
                                         activate=True)
    assert version.default_threshold == DEFAULT_THRESHOLD > 0 and version.metrics["n_val"] < 100

    # the demo cells the model did not train on, uploaded for labelling and read by the model
    ids = [image_upload(data=path.read_bytes(), uploaded_by=admin, split=Split.TRAIN,
                        enqueue_classification=False).image.pk for path, _ in pbc_split()[1]]
    images_classify(image_ids=ids, model_version_id=version.pk)
    preds = {p.image_id: p for p in Prediction.objects.filter(model_version=version)}
    unsure = [p for p in preds.values() if p.reasons == [LOW_CONFIDENCE]]  # referred for its confidence alone
    accepted = [p for p in preds.values() if not p.abstained]
    assert unsure and accepted
    assert all(p.confidence < DEFAULT_THRESHOLD and p.label == "unidentified" for p in unsure)
    assert all(p.confidence >= DEFAULT_THRESHOLD for p in accepted)
    names = dict(CellClass.objects.values_list("code", "name"))

    page = logged_in_page(browser, live_server, "lab1")
    page.goto(f"{live_server.url}/label/unlabelled/")
    cell = page.locator(f".lcell[data-image='{unsure[0].image_id}']")
    expect(cell.locator(".suggest")).to_have_text(_call(unsure[0], names))
    expect(cell.locator(".reason")).to_have_text("referred: low confidence")
    sure = page.locator(f".lcell[data-image='{accepted[0].image_id}']")
    expect(sure.locator(".suggest")).to_have_text(_call(accepted[0], names))
    expect(sure.locator(".reason")).to_have_count(0)
    screenshot(page, "demo-model-refers-low-confidence")
    page.goto(f"{live_server.url}/label/cell/{unsure[0].image_id}/")
    expect(page.locator(".suggestion .reason")).to_have_text("low confidence")
    assert not page.js_errors

    page = logged_in_page(browser, live_server, "rev1")
    page.goto(f"{live_server.url}/models/")
    row = page.locator(f"tr:has(td:text-is('v{version.pk}'))")
    expect(row.locator("td.threshold strong")).to_have_text(f"{DEFAULT_THRESHOLD:.2f}")
    expect(row.locator("td.threshold small")).to_contain_text("validation cells")
    assert not page.js_errors
