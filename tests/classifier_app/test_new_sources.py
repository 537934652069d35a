"""A source other than the lab's default is learned class by class (classifier.new_sources): a call
of a class the version trained on too few of that source's verified cells of is referred with the
reason, a source it never trained on is referred whole, and the default source is left to the
out-of-distribution check."""
from collections import Counter

import pytest

from annotations.services import image_upload
from classifier.ml.engine import CellPrediction
from classifier.ml.reasons import NEW_SOURCE, NEW_SOURCE_FEW_CELLS, OUT_OF_DISTRIBUTION, reason_text
from classifier.models import ModelVersion, Prediction
from classifier.new_sources import MIN_CELLS_PER_CLASS, refer_unlearned, source_training_counts
from classifier.services import images_classify
from tests.factories import CellImageFactory, ModelVersionFactory, SourceFactory


def _trained_on(version, cells_by_label: dict) -> None:
    """Make ``cells_by_label`` (label -> images) ``version``'s training snapshot."""
    version.snapshot = {"items": [[img.pk, img.sha256, label] for label, imgs in cells_by_label.items()
                                  for img in imgs]}
    version.save(update_fields=["snapshot"])


@pytest.mark.django_db
def test_the_training_cells_of_each_source_are_counted_per_class():
    scope_b, scope_c = SourceFactory(name="Scope B"), SourceFactory(name="Scope C")
    b_mono = CellImageFactory.create_batch(4, acquisition_source=scope_b)
    b_lymph = CellImageFactory.create_batch(2, acquisition_source=scope_b)
    home = CellImageFactory.create_batch(3)
    version = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    _trained_on(version, {"monocyte": b_mono, "lymphocyte": b_lymph, "neutrophil_segmented": home})
    counts = source_training_counts(version, {scope_b.pk, scope_c.pk})
    assert counts == {scope_b.pk: Counter(monocyte=4, lymphocyte=2), scope_c.pk: Counter()}


@pytest.mark.django_db
def test_the_model_s_calls_on_a_source_are_referred_until_its_class_is_learned(active_model, labeller, demo_cells):
    scope = SourceFactory(name="Scope B")
    # the active version trained on Scope B's cells: enough lymphocytes, one neutrophil too few, no monocyte
    enough = CellImageFactory.create_batch(MIN_CELLS_PER_CLASS, acquisition_source=scope)
    too_few = CellImageFactory.create_batch(MIN_CELLS_PER_CLASS - 1, acquisition_source=scope)
    _trained_on(active_model, {"lymphocyte": enough, "neutrophil_segmented": too_few})

    paths = [p for code in ("lymphocyte", "monocyte", "neutrophil_segmented")
             for p in sorted((demo_cells / code).iterdir())[6:10]]
    on_b = [image_upload(data=p.read_bytes(), uploaded_by=labeller, enqueue_classification=False,
                         acquisition_source=scope).image.pk for p in paths]
    at_home = [image_upload(data=p.read_bytes(), uploaded_by=labeller, enqueue_classification=False).image.pk
               for code in ("lymphocyte", "monocyte") for p in sorted((demo_cells / code).iterdir())[10:12]]

    def classify():
        Prediction.objects.filter(model_version=active_model).delete()
        assert images_classify(image_ids=on_b + at_home, model_version_id=active_model.pk) == len(on_b) + len(at_home)
        return {p.image_id: p for p in Prediction.objects.filter(model_version=active_model)}

    preds = classify()
    calls = {preds[i].top_class for i in on_b}
    for i in on_b:
        p = preds[i]
        if p.top_class == "lymphocyte" or OUT_OF_DISTRIBUTION in p.reasons:
            assert NEW_SOURCE_FEW_CELLS not in p.reasons  # learned, or already referred as unlike
        else:
            assert p.abstained and p.label == "unidentified"
            assert NEW_SOURCE_FEW_CELLS in p.reasons
            assert "too few verified cells of this class from this source yet" in reason_text(p.reasons)
    assert calls - {"lymphocyte"}, "the model called every Scope B cell a lymphocyte: nothing tests the rule"
    for i in at_home:  # the default source is left to the out-of-distribution check
        assert not {NEW_SOURCE, NEW_SOURCE_FEW_CELLS} & set(preds[i].reasons)

    # once every class the model calls has enough of the source's cells, its decisions stand
    learned = {code: CellImageFactory.create_batch(MIN_CELLS_PER_CLASS, acquisition_source=scope) for code in calls}
    _trained_on(active_model, learned)
    preds = classify()
    assert not any({NEW_SOURCE, NEW_SOURCE_FEW_CELLS} & set(preds[i].reasons) for i in on_b + at_home)


def _pred(reasons, top="monocyte"):
    return CellPrediction(label="unidentified" if reasons else top, top_class=top, confidence=0.5, agreement=1,
                          n_backbones=1, abstained=bool(reasons), reasons=list(reasons))


def test_a_source_never_trained_on_is_referred_whole_and_the_reasons_stay_most_serious_first():
    unlike, low, accepted = _pred([OUT_OF_DISTRIBUTION, "low_confidence"]), _pred(["low_confidence"]), _pred([])
    assert refer_unlearned([unlike, low, accepted], Counter()) == 1  # one had been accepted
    assert unlike.reasons == [OUT_OF_DISTRIBUTION, NEW_SOURCE, "low_confidence"]
    assert low.reasons == [NEW_SOURCE, "low_confidence"]
    assert (accepted.reasons, accepted.abstained, accepted.label) == ([NEW_SOURCE], True, "unidentified")
    assert accepted.top_class == "monocyte"  # the best guess is kept


def test_a_class_learned_from_too_few_of_the_source_s_cells_is_referred():
    unlike, split, learned, accepted = (_pred([OUT_OF_DISTRIBUTION]), _pred(["split_vote"]),
                                        _pred([], top="lymphocyte"), _pred([]))
    counts = Counter({"lymphocyte": MIN_CELLS_PER_CLASS, "monocyte": MIN_CELLS_PER_CLASS - 1})
    assert refer_unlearned([unlike, split, learned, accepted], counts) == 1
    assert unlike.reasons == [OUT_OF_DISTRIBUTION]  # already referred as unlike: that reason alone
    assert split.reasons == [NEW_SOURCE_FEW_CELLS, "split_vote"]
    assert (learned.reasons, learned.abstained) == ([], False)
    assert (accepted.reasons, accepted.abstained) == ([NEW_SOURCE_FEW_CELLS], True)
