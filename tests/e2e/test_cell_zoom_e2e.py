"""The large view of a cell (static/js/cellzoom.js) in headless Chromium: on the verification screen
it opens by key and by click at the image's native resolution with the model's call in full, moves
to the next cell and closes with focus back on the cell; on the adjudication page nothing is
preselected, a class hotkey + Enter decides a row, and the large view opens from the cell."""
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from annotations.models import Adjudication
from annotations import services as annotation_services
from tests.e2e.steps import open_page, users
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory, cell_class
from tests.helpers import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NATIVE = (300, 280)  # larger than the cards, smaller than the window: shown 1:1




def shown_size(page):
    return page.locator("#cell-zoom .zoom-img").evaluate(
        "i => [i.naturalWidth, i.naturalHeight, Math.round(i.getBoundingClientRect().width),"
        " Math.round(i.getBoundingClientRect().height)]")


def test_large_view_on_the_verification_screen(browser, live_server):
    from slides.models import Slide, SlideCell

    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    slide = Slide.objects.create(code="ZOOM-0001", created_by=u["admin1"], kind="cells", status="ready",
                                 task_state="done", model_version=version)
    referred = SlideCell.objects.create(
        slide=slide, image=CellImageFactory(uploaded_by=u["admin1"], size=NATIVE), predicted_class="unidentified",
        top_class="monocyte", confidence=0.32, agreement=1, n_backbones=3, reasons=["split_vote"],
        model_version=version, final_class=cell_class("unidentified"))
    for _ in range(2):
        SlideCell.objects.create(
            slide=slide, image=CellImageFactory(uploaded_by=u["admin1"], size=NATIVE), predicted_class="lymphocyte",
            top_class="lymphocyte", confidence=0.93, agreement=3, n_backbones=3, model_version=version,
            final_class=cell_class("lymphocyte"))

    page = open_page(browser, live_server, "rev1")
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    zoom = page.locator("#cell-zoom")
    expect(zoom).to_be_hidden()
    # The caption under the card is whole: wrapped, not cut off with an ellipsis.
    caption = page.locator(f"#cell-{referred.pk} .pre")
    expect(caption).to_have_text("model: referred (best guess Monocyte 32%)")
    assert caption.evaluate("e => e.scrollWidth <= e.clientWidth && getComputedStyle(e).textOverflow !== 'ellipsis'")

    ids = page.evaluate("() => Array.from(document.querySelectorAll('.slide-cell')).map(c => c.id)")
    assert len(ids) == 3
    # By key: + on the selected cell.
    page.locator(f"#{ids[0]}").click(position={"x": 20, "y": 20})
    page.keyboard.press("+")
    expect(zoom).to_be_visible()
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {ids[0].split('-')[1]}")
    expect(zoom.locator(".zoom-size")).to_have_text("300 × 280 px, native resolution")
    assert shown_size(page) == [300, 280, 300, 280]
    expect(zoom.locator(".zoom-position")).to_have_text("1 of 3")
    # Next within the view (arrow key): the page's selection follows.
    page.keyboard.press("ArrowRight")
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {ids[1].split('-')[1]}")
    expect(zoom.locator(".zoom-position")).to_have_text("2 of 3")
    expect(page.locator(f"#{ids[1]}")).to_have_class(lambda_re("selected"))
    page.keyboard.press("Escape")
    expect(zoom).to_be_hidden()
    expect(page.locator(f"#{ids[1]}")).to_be_focused()  # focus back on the cell shown last
    assert page.locator(f"#{ids[1]}").count() == 1 and page.locator("#verify-error").count() == 0

    # By click: the cell's ⤢ button; the referred cell's call and reason in full.
    page.locator(f"#cell-{referred.pk} .zoom-open").click()
    expect(zoom).to_be_visible()
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {referred.pk}")
    expect(zoom.locator(".zoom-call")).to_contain_text("model: referred (best guess Monocyte 32%)")
    expect(zoom.locator(".zoom-reason")).to_have_text("referred: split vote")
    screenshot(page, "verify-large-view")
    position = ids.index(f"cell-{referred.pk}")
    button, expected = (".zoom-next", ids[position + 1]) if position < 2 else (".zoom-prev", ids[position - 1])
    zoom.locator(button).click()
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {expected.split('-')[1]}")
    expect(zoom.locator(".zoom-call")).to_have_text("model: Lymphocyte 93%; 3/3 backbones agree")
    expect(zoom.locator(".zoom-reason")).to_be_hidden()
    zoom.locator(".zoom-close").click()
    expect(zoom).to_be_hidden()
    expect(page.locator(f"#{expected}")).to_be_focused()
    referred.refresh_from_db()
    assert referred.changed_by_id is None  # looking changes nothing
    assert not page.js_errors


def lambda_re(word):
    import re

    return re.compile(rf"(^|\s){word}(\s|$)")


def test_adjudication_page_no_preselection_hotkey_enter_and_the_large_view(browser, live_server):
    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    first, second = (CellImageFactory(uploaded_by=u["admin1"], size=NATIVE) for _ in range(2))
    PredictionFactory(image=first, model_version=version, top_class="monocyte", confidence=0.88)
    PredictionFactory(image=second, model_version=version, top_class="monocyte", confidence=0.32, abstained=True,
                      reasons=["split_vote"])
    for image in (first, second):
        annotation_services.label_submit(image=image, labeller=u["lab1"], cell_class=cell_class("monocyte"))
        annotation_services.label_submit(image=image, labeller=u["lab2"], cell_class=cell_class("lymphocyte"))
    lymph_key = cell_class("lymphocyte").hotkey
    assert lymph_key

    page = open_page(browser, live_server, "rev1")
    page.goto(f"{live_server.url}/review/")
    rows = page.locator("tr.review-row")
    expect(rows).to_have_count(2)
    for image in (first, second):
        select = page.locator(f"tr[data-image='{image.pk}'] select[name=cell_class]")
        assert select.evaluate("s => s.value") == ""  # not the first reader's Monocyte
        expect(select.locator("option:checked")).to_have_text("— choose —")
    thumb = page.locator(f"tr[data-image='{first.pk}'] a.thumb img")
    assert thumb.evaluate("i => Math.round(i.getBoundingClientRect().width)") == 256
    row_id = rows.first.get_attribute("data-image")
    row = page.locator(f"tr[data-image='{row_id}']")
    expect(row).to_be_focused()

    page.keyboard.press("Enter")  # nothing chosen: nothing decided, and the row says why
    expect(row.locator(".decide-status")).to_have_text("Choose the final class first: press its key or pick it in the list.")
    page.wait_for_timeout(300)
    assert not Adjudication.objects.exists()

    page.keyboard.press(lymph_key)
    assert row.locator("select[name=cell_class]").evaluate("s => s.value") == "lymphocyte"
    page.keyboard.press("Enter")
    page.wait_for_selector(f"text=Cell {row_id} is final: Lymphocyte.")
    decided = Adjudication.objects.get()
    assert (decided.image_id, decided.cell_class.code, decided.reviewer.username) == (int(row_id), "lymphocyte", "rev1")

    # The large view from a click on the remaining cell; its referred call in full; Esc closes.
    left = page.locator("tr.review-row")
    expect(left).to_have_count(1)
    left_id = left.get_attribute("data-image")
    left.locator("a.thumb").click()
    zoom = page.locator("#cell-zoom")
    expect(zoom).to_be_visible()
    expect(page).to_have_url(f"{live_server.url}/review/")  # the click opened the view, not the cell's page
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {left_id}")
    assert shown_size(page) == [300, 280, 300, 280]
    if int(left_id) == second.pk:
        expect(zoom.locator(".zoom-call")).to_have_text("model: referred (best guess Monocyte 32%)")
        expect(zoom.locator(".zoom-reason")).to_have_text("referred: split vote")
    else:
        expect(zoom.locator(".zoom-call")).to_have_text("model: Monocyte 88%")
    screenshot(page, "adjudication-large-view")
    page.keyboard.press("Escape")
    expect(zoom).to_be_hidden()
    expect(left).to_be_focused()
    page.keyboard.press("+")  # and by key
    expect(zoom).to_be_visible()
    assert not page.js_errors


def test_the_labelling_grid_uses_the_same_large_view(browser, live_server):
    u = users()
    version = ModelVersionFactory(status="active", activated_at=timezone.now())
    cells = [CellImageFactory(uploaded_by=u["admin1"], size=NATIVE) for _ in range(2)]
    PredictionFactory(image=cells[0], model_version=version, top_class="monocyte", confidence=0.32, abstained=True,
                      reasons=["split_vote"])
    PredictionFactory(image=cells[1], model_version=version, top_class="lymphocyte", confidence=0.93)

    page = open_page(browser, live_server, "lab1")
    page.goto(f"{live_server.url}/label/prelabelled/")
    order = page.evaluate("() => Array.from(document.querySelectorAll('.lcell')).map(c => c.dataset.image)")
    assert sorted(order) == sorted(str(c.pk) for c in cells)
    calls = {str(cells[0].pk): "model: referred (best guess Monocyte 32%)", str(cells[1].pk): "model: Lymphocyte 93%"}
    page.locator(f".lcell[data-image='{order[0]}']").click(position={"x": 20, "y": 20})
    page.keyboard.press("+")
    zoom = page.locator("#cell-zoom")
    expect(zoom).to_be_visible()
    expect(zoom.locator(".zoom-call")).to_have_text(calls[order[0]])
    assert shown_size(page) == [300, 280, 300, 280]
    page.keyboard.press("ArrowRight")
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {order[1]}")
    expect(zoom.locator(".zoom-call")).to_have_text(calls[order[1]])
    page.keyboard.press("Escape")
    expect(zoom).to_be_hidden()
    expect(page.locator(f".lcell[data-image='{order[1]}']")).to_be_focused()
    page.locator(f".lcell[data-image='{order[0]}']").dblclick(position={"x": 20, "y": 20})
    expect(zoom.locator(".zoom-title")).to_have_text(f"cell {order[0]}")
    assert not page.js_errors
