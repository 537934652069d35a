"""A cell the model referred to an expert, in headless Chromium: its best guess is shown, but one
generic key (Enter) does not accept it, on the labelling grid or on the slide verification screen;
the class key does, and the review queue says "confirmed the model's X" only where the model had
accepted X."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from annotations import services as annotation_services
from annotations.models import Label
from tests.e2e.steps import open_page, poll, users
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory, cell_class
from tests.helpers import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]






def test_enter_does_not_label_a_referred_cell_on_the_grid_and_the_review_queue_words_it(browser, live_server):
    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    referred, accepted = CellImageFactory.create_batch(2, uploaded_by=u["admin1"])
    PredictionFactory(image=referred, model_version=version, top_class="monocyte", confidence=0.32, abstained=True,
                      reasons=["split_vote"])
    PredictionFactory(image=accepted, model_version=version, top_class="lymphocyte", confidence=0.93)

    page = open_page(browser, live_server, "lab1")
    page.goto(f"{live_server.url}/label/prelabelled/")
    cell = page.locator(f".lcell[data-image='{referred.pk}']")
    expect(cell.locator(".suggest")).to_have_text("model: referred (best guess Monocyte 32%)")
    expect(cell.locator(".reason")).to_have_text("referred: split vote")
    cell.click(position={"x": 20, "y": 20})
    page.keyboard.press("Enter")
    expect(page.locator("#save-status")).to_contain_text("the model referred it (split vote)")
    expect(page.locator("#save-status")).to_contain_text("m for Monocyte")
    page.wait_for_timeout(500)  # a request, had one been sent, would have been answered by now
    assert not Label.objects.filter(image=referred).exists()
    expect(cell.locator(".mine")).to_have_text("")
    expect(cell).to_be_focused()  # Enter did not move on: the reader still has to classify the cell
    screenshot(page, "grid-enter-on-referred-cell")

    page.keyboard.press("m")  # the class key of the best guess classifies it
    poll(page, lambda: Label.objects.filter(image=referred, labeller=u["lab1"]).exists(), message="the label")
    label = Label.objects.get(image=referred, labeller=u["lab1"])
    assert (label.cell_class.code, label.suggested_class.code, label.suggestion_referred) == ("monocyte", "monocyte", True)
    assert label.confirmed_model_call is False
    expect(cell.locator(".mine")).to_have_text("Monocyte")  # no "✓": there was no call to confirm

    expect(page.locator(f".lcell[data-image='{accepted.pk}']")).to_be_focused()
    page.keyboard.press("Enter")  # the model accepted this one: Enter confirms its call
    poll(page, lambda: Label.objects.filter(image=accepted, labeller=u["lab1"]).exists(), message="the confirmation")
    label = Label.objects.get(image=accepted, labeller=u["lab1"])
    assert (label.cell_class.code, label.suggestion_referred, label.confirmed_model_call) == ("lymphocyte", False, True)
    expect(page.locator(f".lcell[data-image='{accepted.pk}'] .mine")).to_have_text("Lymphocyte ✓")
    assert not page.js_errors

    # A second reader disagrees on both: the reviewer reads how each first reading was made.
    annotation_services.label_submit_as_offered(image=referred, labeller=u["lab2"],
                                                cell_class=cell_class("immature_granulocyte"))
    annotation_services.label_submit_as_offered(image=accepted, labeller=u["lab2"], cell_class=cell_class("monocyte"))
    review = open_page(browser, live_server, "rev1")
    review.goto(f"{live_server.url}/review/")
    referred_row = review.locator(f"tr[data-image='{referred.pk}'] .side-by-side li")
    expect(referred_row.filter(has_text="lab1").locator(".label-vs-model")).to_have_text(
        "classified Monocyte (the model had referred it; its best guess was Monocyte)")
    expect(referred_row.filter(has_text="lab2").locator(".label-vs-model")).to_have_text(
        "classified Immature granulocyte (the model had referred it; its best guess was Monocyte)")
    accepted_row = review.locator(f"tr[data-image='{accepted.pk}'] .side-by-side li")
    expect(accepted_row.filter(has_text="lab1").locator(".label-vs-model")).to_have_text(
        "confirmed the model's Lymphocyte")
    expect(accepted_row.filter(has_text="lab2").locator(".label-vs-model")).to_have_text(
        "changed the model's Lymphocyte")
    screenshot(review, "review-queue-referred-wording")
    assert not review.js_errors


def test_enter_does_not_classify_a_referred_cell_on_the_verification_screen(browser, live_server):
    from slides.models import Slide, SlideCell

    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    slide = Slide.objects.create(code="REF-0001", created_by=u["admin1"], kind="cells", status="ready",
                                 task_state="done", model_version=version)
    referred = SlideCell.objects.create(
        slide=slide, image=CellImageFactory(uploaded_by=u["admin1"]), predicted_class="unidentified",
        top_class="monocyte", confidence=0.32, agreement=1, n_backbones=3, reasons=["split_vote"],
        model_version=version, final_class=cell_class("unidentified"))
    accepted = SlideCell.objects.create(
        slide=slide, image=CellImageFactory(uploaded_by=u["admin1"]), predicted_class="lymphocyte",
        top_class="lymphocyte", confidence=0.93, agreement=3, n_backbones=3, model_version=version,
        final_class=cell_class("lymphocyte"))

    page = open_page(browser, live_server, "rev1")
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    card = page.locator(f"#group-unidentified #cell-{referred.pk}")
    expect(card.locator(".pre")).to_have_text("model: referred (best guess Monocyte 32%)")
    expect(card.locator(".reason")).to_have_text("referred: split vote")
    # Without JavaScript its form would start at no class (not at the first class of the list).
    assert card.locator("select[name=target]").evaluate("s => s.value") == ""
    card.click(position={"x": 20, "y": 20})
    page.keyboard.press("Enter")
    expect(page.locator("#verify-error")).to_contain_text("The model referred this cell")
    expect(page.locator("#verify-error")).to_contain_text("m for Monocyte")
    page.wait_for_timeout(500)
    expect(page.locator(f"#group-unidentified #cell-{referred.pk}")).to_have_count(1)
    referred.refresh_from_db()
    assert referred.changed_by_id is None and not Label.objects.filter(image=referred.image).exists()
    screenshot(page, "verify-enter-on-referred-cell")

    page.keyboard.press("m")
    expect(page.locator(f"#group-monocyte #cell-{referred.pk}")).to_have_count(1)
    expect(page.locator("#verify-error")).to_have_text("")
    label = Label.objects.get(image=referred.image)
    assert (label.cell_class.code, label.suggestion_referred, label.confirmed_model_call) == ("monocyte", True, False)

    page.locator(f"#cell-{accepted.pk}").click(position={"x": 20, "y": 20})
    page.keyboard.press("Enter")  # an accepted call: Enter confirms it as the reviewer's class
    expect(page.locator(f"#cell-{accepted.pk} .verified-mark")).to_be_visible()
    label = Label.objects.get(image=accepted.image)
    assert (label.cell_class.code, label.suggestion_referred, label.confirmed_model_call) == ("lymphocyte", False, True)
    assert not page.js_errors
