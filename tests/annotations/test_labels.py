import threading

import pytest
from django.db import connection

from annotations.models import AuditEvent, Label, LabSettings
from annotations.selectors import labelling_queue
from annotations.services import LabelConflict, adjudication_submit, image_split_move, image_upload, label_submit
from tests.factories import UserFactory, cell_class
from tests.helpers import png_bytes


@pytest.fixture
def image(labeller):
    return image_upload(data=png_bytes(), uploaded_by=labeller, split="heldout", enqueue_classification=False).image


def test_two_agreeing_readers_make_the_final_label(image, labeller, labeller2):
    label_submit(image=image, labeller=labeller, cell_class=cell_class("monocyte"))
    image.refresh_from_db()
    assert image.final_label is None and not image.needs_review
    label_submit(image=image, labeller=labeller2, cell_class=cell_class("monocyte"))
    image.refresh_from_db()
    assert image.final_label.code == "monocyte"


def test_disagreement_goes_to_review_and_reviewer_decides(image, labeller, labeller2, reviewer):
    label_submit(image=image, labeller=labeller, cell_class=cell_class("monocyte"))
    label_submit(image=image, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    image.refresh_from_db()
    assert image.needs_review and image.final_label is None
    adjudication_submit(image=image, reviewer=reviewer, cell_class=cell_class("lymphocyte"))
    image.refresh_from_db()
    assert image.final_label.code == "lymphocyte" and not image.needs_review
    assert AuditEvent.objects.filter(action="label.adjudicate", target_id=str(image.pk)).exists()


def test_changing_a_label_supersedes_it_and_keeps_history(image, labeller):
    first = label_submit(image=image, labeller=labeller, cell_class=cell_class("monocyte"))
    label_submit(image=image, labeller=labeller, cell_class=cell_class("lymphocyte"))
    first.refresh_from_db()
    assert first.superseded_at is not None
    assert Label.objects.filter(image=image).count() == 2
    assert AuditEvent.objects.filter(action="label.change", target_id=str(image.pk)).get().before["class"] == "monocyte"


def test_unsure_label_goes_to_review_even_alone(labeller):
    img = image_upload(data=png_bytes((1, 1, 1)), uploaded_by=labeller, enqueue_classification=False).image
    assert LabSettings.get().labels_required("train") == 1
    label_submit(image=img, labeller=labeller, cell_class=cell_class("basophil"), unsure=True)
    img.refresh_from_db()
    assert img.needs_review and img.final_label is None


def test_split_move_is_audited(image, lab_admin):
    image_split_move(image=image, actor=lab_admin, split="train")
    event = AuditEvent.objects.get(action="image.split_move")
    assert event.before == {"split": "heldout"} and event.after == {"split": "train"} and event.actor == lab_admin


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_adjudicating_at_once_one_wins_the_other_is_told():

    lab1, lab2 = UserFactory(username="l1", role="labeller"), UserFactory(username="l2", role="labeller")
    rev1, rev2 = UserFactory(username="r1", role="reviewer"), UserFactory(username="r2", role="reviewer")
    img = image_upload(data=png_bytes((5, 5, 5)), uploaded_by=lab1, split="heldout", enqueue_classification=False).image
    label_submit(image=img, labeller=lab1, cell_class=cell_class("monocyte"))
    label_submit(image=img, labeller=lab2, cell_class=cell_class("lymphocyte"))
    results, barrier = {}, threading.Barrier(2)

    def decide(user, code):
        try:
            barrier.wait()
            adjudication_submit(image=img, reviewer=user, cell_class=cell_class(code))
            results[user.username] = "won"
        except LabelConflict as exc:
            results[user.username] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(rev1, "monocyte")), threading.Thread(target=decide, args=(rev2, "lymphocyte"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(v == "won" for v in results.values()) == [False, True]
    loser = next(v for v in results.values() if v != "won")
    assert "Already adjudicated" in loser
    assert img.adjudications.count() == 1


def test_a_first_readers_not_sure_leaves_the_cell_to_the_second_reader(image, labeller, labeller2):
    """The held-out cell needs two readings: the first reader's 'not sure' is one of them, not a dispute."""
    label_submit(image=image, labeller=labeller, cell_class=cell_class("basophil"), unsure=True)
    image.refresh_from_db()
    assert not image.needs_review and image.final_label is None and image.current_label_count == 1
    assert list(labelling_queue(user=labeller2, queue="heldout")) == [image]
    label_submit(image=image, labeller=labeller2, cell_class=cell_class("basophil"))
    image.refresh_from_db()
    assert image.needs_review and image.final_label is None  # read twice, one reader unsure: a reviewer decides


@pytest.mark.parametrize(("readings", "required", "decision"), [
    ([], 1, (None, False)),
    ([("mono", True)], 2, (None, False)),  # a first 'not sure' waits for the second reader
    ([("mono", False), ("lymph", False)], 3, (None, False)),  # a first disagreement too
    ([("mono", False)], 2, (None, False)),
    ([("mono", False), ("mono", False)], 2, ("mono", False)),
    ([("mono", True)], 1, (None, True)),
    ([("mono", False), ("mono", True)], 2, (None, True)),
    ([("mono", False), ("lymph", False)], 2, (None, True)),
])
def test_the_labs_rule_decides_a_final_label_only_once_the_required_experts_have_read(readings, required, decision):
    lab = LabSettings(labels_required_train=required, labels_required_heldout=required)
    assert lab.final_label_decide(split="train", source="cell", readings=readings) == decision
    assert lab.final_label_decide(split="heldout", source="cell", readings=readings, adjudicated="eo") == ("eo", False)
