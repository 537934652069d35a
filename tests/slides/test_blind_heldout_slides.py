"""A held-out cell uploaded again in a slide (deduplicated to the same image) is read blind there too:
the slide API and pages hide what the labelling portal hides (one rule, LabSettings.hides_model_call /
hides_other_readings), and a slide verification is never a reading of the held-out cell."""
import pytest
from rest_framework.test import APIClient

from annotations import services as annotation_services
from annotations.models import AuditEvent, LabSettings, Split
from slides import services
from slides.models import Slide, SlideCell, SlideField
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory, cell_class
from tests.helpers import png_bytes

HELD_BYTES = png_bytes(color=(11, 22, 33), size=(64, 64))
TRAIN_BYTES = png_bytes(color=(44, 55, 66), size=(64, 64))


def set_lab(**kw):
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(**kw)


def api_as(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def version(db):
    return ModelVersionFactory(status="active", classes=["lymphocyte", "monocyte"])


@pytest.fixture
def held(lab_admin, version):
    """A held-out cell the model calls 'Monocyte 87%'."""
    image = CellImageFactory(uploaded_by=lab_admin, split=Split.HELDOUT, data=HELD_BYTES)
    PredictionFactory(image=image, model_version=version, top_class="monocyte", confidence=0.87)
    return image


@pytest.fixture
def train(lab_admin, version):
    image = CellImageFactory(uploaded_by=lab_admin, data=TRAIN_BYTES)
    PredictionFactory(image=image, model_version=version, top_class="lymphocyte", confidence=0.93)
    return image


def cropped_slide(user, code="BLIND-1") -> Slide:
    """A cropped-cell slide of the held-out cell and the training cell uploaded again, processed."""
    slide = services.slide_create(code=code, created_by=user, kind=Slide.Kind.CELLS)
    result = services.slide_images_add(slide=slide, files=[("a.png", HELD_BYTES), ("b.png", TRAIN_BYTES)],
                                       uploaded_by=user)
    assert len(result["stored"]) == 2, result
    assert services.slide_process(slide_id=slide.pk) is not None
    return slide


@pytest.fixture
def slide(labeller, held, train):
    return cropped_slide(labeller)


def cells_by_image(api, slide) -> dict[int, dict]:
    r = api.get(f"/api/slides/{slide.pk}/cells/")
    assert r.status_code == 200, r.content
    return {row["image"]: row for row in r.json()}


def test_processing_refers_an_undecided_heldout_cell_instead_of_counting_the_hidden_call(slide, held, train,
                                                                                       labeller2):
    by_image = {c.image_id: c for c in slide.cells.select_related("final_class")}
    assert set(by_image) == {held.pk, train.pk}  # deduplicated to the same images
    assert by_image[held.pk].predicted_class == "monocyte"  # the model's call is kept for the ledger ...
    assert by_image[held.pk].final_class.is_abstain  # ... but the cell waits for the verifier
    assert by_image[train.pk].final_class.code == "lymphocyte"
    # waiting as unidentified, it tells nothing: the slide's totals are shown to a labeller
    body = api_as(labeller2).get(f"/api/slides/{slide.pk}/").json()
    assert body["differential_withheld"] == "" and body["differential"]["counts"] == {"lymphocyte": 1,
                                                                                     "unidentified": 1}


def test_slide_api_hides_the_heldout_cells_call_wherever_the_labelling_api_does(slide, held, train, labeller,
                                                                                reviewer):
    for user in (labeller, reviewer):  # nobody sees the call of an undecided held-out cell
        api = api_as(user)
        rows = cells_by_image(api, slide)
        assert api.get(f"/api/cells/{held.pk}/").json()["suggestion"] is None  # the labelling API hides it
        hidden = rows[held.pk]
        assert hidden["blind"] is True
        for field in ("predicted_class", "top_class", "confidence", "agreement", "reasons", "reason", "ood_score",
                      "out_of_distribution", "final_class"):
            assert hidden[field] is None, (user, field)
        assert api.get(f"/api/cells/{train.pk}/").json()["suggestion"]["cell_class"] == "lymphocyte"
        shown = rows[train.pk]
        assert shown["blind"] is False
        assert (shown["predicted_class"], shown["confidence"], shown["final_class"]) == ("lymphocyte", 0.93, "lymphocyte")


def test_slide_api_shows_the_call_once_blind_mode_is_off(slide, held, labeller):
    set_lab(blind_heldout=False)
    row = cells_by_image(api_as(labeller), slide)[held.pk]
    assert row["blind"] is False and (row["predicted_class"], row["confidence"]) == ("monocyte", 0.87)


def test_a_reviewers_slide_verification_is_not_a_reading_of_the_heldout_cell(client, slide, held, train, labeller,
                                                                             labeller2, reviewer):
    annotation_services.label_submit(image=held, labeller=labeller, cell_class=cell_class("lymphocyte"))
    api = api_as(reviewer)
    rows = cells_by_image(api, slide)
    r = api.post(f"/api/slides/{slide.pk}/cells/{rows[held.pk]['id']}/reclassify/", {"target": "monocyte"})
    assert r.status_code == 200, r.content
    body = r.json()
    # the reviewer's own decision is shown; the model's call stays hidden until the cell is decided
    assert (body["final_class"], body["verified"], body["blind"], body["predicted_class"]) == (
        "monocyte", True, True, None)
    held.refresh_from_db()
    assert [lb.labeller for lb in held.labels.all()] == [labeller]  # no reading by the reviewer
    assert held.final_label is None and not held.needs_review
    event = AuditEvent.objects.filter(action="slide.cell_reclassify", target_id=str(rows[held.pk]["id"])).get()
    assert event.after["label"] is None
    # the slide counts the cell as the reviewer verified it
    assert api.get(f"/api/slides/{slide.pk}/").json()["differential"]["counts"]["monocyte"] == 1
    # the held-out label is decided by the two blind readings alone
    annotation_services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    held.refresh_from_db()
    assert held.final_label.code == "lymphocyte" and not held.needs_review
    # a labeller sees neither the model's call nor the reviewer's class on the slide
    row = cells_by_image(api_as(labeller2), slide)[held.pk]
    assert (row["blind"], row["final_class"], row["predicted_class"], row["verified"]) == (True, None, None, True)
    # ... nor the slide's totals, which would tell it (this slide's other cell is a lymphocyte they can see)
    body = api_as(labeller2).get(f"/api/slides/{slide.pk}/").json()
    assert body["differential"] is None and "1 of its counted cells is hidden from you" in body["differential_withheld"]
    client.force_login(labeller2)
    page = client.get(f"/slides/{slide.pk}/").content.decode()
    assert 'id="differential-withheld"' in page and "differential-table" not in page
    assert api.get(f"/api/slides/{slide.pk}/").json()["differential_withheld"] == ""  # the reviewer's view
    # a training cell verified on a slide is still the verifier's reading (it trains the next model)
    r = api.post(f"/api/slides/{slide.pk}/cells/{rows[train.pk]['id']}/reclassify/", {"target": "lymphocyte"})
    assert r.status_code == 200 and [lb.labeller for lb in train.labels.all()] == [reviewer]


def test_a_heldout_verification_is_no_reading_even_without_blind_mode(slide, held, reviewer):
    set_lab(blind_heldout=False)
    cell = slide.cells.get(image=held)
    services.slide_cell_reclassify(cell=cell, actor=reviewer, target="monocyte")
    assert not held.labels.exists()


@pytest.fixture
def called_slide(labeller, held, train):
    """The cropped-cell slide processed while blind mode was off (its held-out cell counted under the
    model's 'Monocyte'), read after blind mode was turned on."""
    set_lab(blind_heldout=False)
    slide = cropped_slide(labeller, code="BLIND-2")
    assert slide.cells.get(image=held).final_class.code == "monocyte"
    set_lab(blind_heldout=True)
    return slide


def test_verification_screen_shows_a_heldout_cell_blind_with_the_unidentified(client, called_slide, held, train,
                                                                              reviewer):
    client.force_login(reviewer)
    page = client.get(f"/slides/{called_slide.pk}/verify/")
    assert page.status_code == 200
    html = page.content.decode()
    cells = {c.image_id: c.pk for c in called_slide.cells.all()}
    held_el = html.split(f'id="cell-{cells[held.pk]}"')[1].split("</select>")[0]
    train_el = html.split(f'id="cell-{cells[train.pk]}"')[1].split("</select>")[0]
    assert '<span class="pre blind"' in held_el and "held-out: read blind" in held_el
    assert "model:" not in held_el and 'data-predicted=""' in held_el and 'class="reason' not in held_el
    from tests.helpers import rendered_options

    held_options = rendered_options(html, "aria-label", f"class of cell {cells[held.pk]}")
    assert [o["value"] for o in held_options if o["selected"]] == [""]  # no class preselected: "— choose a class —"
    assert "model: Lymphocyte 93%" in train_el
    unidentified = html.split('id="group-unidentified"')[1].split("</section>")[0]
    monocytes = html.split('id="group-monocyte"')[1].split("</section>")[0]
    assert f'id="cell-{cells[held.pk]}"' in unidentified and 'class="slide-cell' not in monocytes
    # "confirm the monocytes" confirms only what the reviewer was shown
    assert services.slide_cells_confirm(slide=called_slide, actor=reviewer, code="monocyte") == 0
    assert not SlideCell.objects.get(pk=cells[held.pk]).verified


def test_slide_page_boxes_hide_a_heldout_cells_class_from_a_labeller(client, labeller, held, version):
    from annotations.models import Source
    from annotations.services import image_upload

    slide = services.slide_create(code="BOX-1", created_by=labeller)
    field = SlideField.objects.create(slide=slide, position=0, detected=True, n_cells=1, image=image_upload(
        data=png_bytes(color=(9, 9, 9), size=(640, 480)), uploaded_by=labeller, source=Source.FIELD,
        enqueue_classification=False).image)
    SlideCell.objects.create(slide=slide, field=field, image=held, x0=10, y0=10, x1=60, y1=60,
                                    predicted_class="monocyte", top_class="monocyte", confidence=0.87,
                                    final_class=cell_class("monocyte"))
    Slide.objects.filter(pk=slide.pk).update(task_state=Slide.TaskState.DONE, status=Slide.Status.READY)
    client.force_login(labeller)
    html = client.get(f"/slides/{slide.pk}/").content.decode()
    box = html.split('class="cell-box')[1].split("</span>")[0]
    assert 'data-blind="true"' in box and "Monocyte" not in box and box.endswith(">?")
    set_lab(blind_heldout=False)
    box = client.get(f"/slides/{slide.pk}/").content.decode().split('class="cell-box')[1].split("</span>")[0]
    assert 'title="Monocyte"' in box and box.endswith(">m")


def test_the_large_views_data_on_the_verification_screen_hides_a_heldout_cells_call(client, called_slide, held,
                                                                                   train, reviewer):
    from django.urls import reverse

    from tests.helpers import rendered_attrs

    client.force_login(reviewer)
    html = client.get(f"/slides/{called_slide.pk}/verify/").content.decode()
    cells = {c.image_id: c.pk for c in called_slide.cells.all()}
    held_el = rendered_attrs(html, "id", f"cell-{cells[held.pk]}")[0]
    train_el = rendered_attrs(html, "id", f"cell-{cells[train.pk]}")[0]
    assert "blind" in held_el["class"].split() and held_el["data-file"] == reverse("annotations:image_file", args=[held.pk])
    assert "data-zoom-call" not in held_el and "data-zoom-reason" not in held_el
    assert train_el["data-zoom-call"].startswith("model: Lymphocyte 93%")
