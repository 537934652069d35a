"""The adjudication page anchors nobody: no class is preselected, an empty decision is refused
(page, service and API), the grid's class hotkeys are on the options, the large view's data
respects the blind rule."""
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from annotations import services
from tests.factories import CellImageFactory, PredictionFactory, cell_class
from tests.helpers import rendered_attrs, rendered_options

pytestmark = pytest.mark.django_db


@pytest.fixture
def disputed(labeller, labeller2, lab_admin):
    image = CellImageFactory(uploaded_by=lab_admin)
    services.label_submit(image=image, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=image, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    image.refresh_from_db()
    assert image.needs_review
    return image


def decision_options(html, image):
    return rendered_options(html, "aria-label", f"final class for cell {image.pk}")


def test_no_class_is_preselected_and_the_first_option_is_an_empty_choose(client, reviewer, disputed):
    client.force_login(reviewer)
    html = client.get(reverse("annotations:review_queue")).content.decode()
    options = decision_options(html, disputed)
    assert options, "the decision select is on the page"
    first = options[0]
    assert first["value"] == "" and "choose" in first["text"] and first["selected"] and first["disabled"]
    assert [o["value"] for o in options if o["selected"]] == [""]  # not the first reader's monocyte
    assert {"monocyte", "lymphocyte"} <= {o["value"] for o in options}
    select = rendered_attrs(html, "aria-label", f"final class for cell {disputed.pk}")[0]
    assert "required" in select


def test_the_options_carry_the_grids_class_hotkeys(client, reviewer, disputed):
    client.force_login(reviewer)
    html = client.get(reverse("annotations:review_queue")).content.decode()
    keys = {o["value"]: o["attrs"].get("data-hotkey") for o in decision_options(html, disputed)}
    assert keys["monocyte"] == cell_class("monocyte").hotkey and keys["monocyte"]
    assert keys["lymphocyte"] == cell_class("lymphocyte").hotkey


def test_an_empty_decision_is_refused_with_a_clear_error_and_nothing_is_stored(client, reviewer, disputed):
    client.force_login(reviewer)
    for data in ({"cell_class": "", "note": "x"}, {"note": "x"}):
        response = client.post(reverse("annotations:review_decide", args=[disputed.pk]), data, follow=True)
        messages = [str(m) for m in response.context["messages"]]
        assert messages == [f"Cell {disputed.pk}: Nothing decided: choose the final class (nothing is preselected)."]
    disputed.refresh_from_db()
    assert disputed.adjudications.count() == 0 and disputed.needs_review and disputed.final_label is None


def test_the_service_refuses_an_empty_class(reviewer, disputed):
    with pytest.raises(ValidationError) as exc:
        services.adjudication_submit(image=disputed, reviewer=reviewer, cell_class=None)
    assert "cell_class" in exc.value.message_dict
    assert disputed.adjudications.count() == 0


def test_the_api_refuses_an_empty_class(reviewer, disputed):
    api = APIClient()
    api.force_authenticate(reviewer)
    response = api.post("/api/adjudications/", {"image": disputed.pk, "cell_class": ""}, format="json")
    assert response.status_code == 400 and "cell_class" in response.json()
    assert disputed.adjudications.count() == 0


def test_the_large_views_data_shows_the_call_except_on_a_blind_heldout_cell(client, reviewer, labeller, labeller2,
                                                                           lab_admin, active_model_row, disputed):
    PredictionFactory(image=disputed, model_version=active_model_row, top_class="monocyte", confidence=0.41,
                      abstained=True)
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.81)
    services.label_submit(image=held, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    client.force_login(reviewer)
    html = client.get(reverse("annotations:review_queue")).content.decode()
    train_row = rendered_attrs(html, "data-image", str(disputed.pk))[0]
    held_row = rendered_attrs(html, "data-image", str(held.pk))[0]
    assert train_row["data-zoom-call"] == "model: referred (best guess Monocyte 41%)"
    assert train_row["data-zoom-reason"]
    assert train_row["data-file"] == reverse("annotations:image_file", args=[disputed.pk])
    assert "blind" in held_row["class"].split()
    assert "data-zoom-call" not in held_row and "data-zoom-reason" not in held_row
