"""A source the model first found unlike its training images, learned from too few of its verified
cells of a class: the model's calls of that class on that source are referred with the reason
(classifier.new_sources); a source it read as familiar, and the lab's default source, are not."""
import pytest

from annotations.services import image_upload
from classifier.ml.reasons import NEW_SOURCE_FEW_CELLS, OUT_OF_DISTRIBUTION, reason_text
from classifier.models import ModelVersion, Prediction
from classifier.new_sources import MIN_CELLS_PER_CLASS, new_sources
from classifier.services import images_classify
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory, SourceFactory

pytestmark = pytest.mark.django_db


def _trained_on(version, cells_by_label: dict) -> None:
    """Make ``cells_by_label`` (label -> images) ``version``'s training snapshot."""
    version.snapshot = {"items": [[img.pk, img.sha256, label] for label, imgs in cells_by_label.items()
                                  for img in imgs]}
    version.save(update_fields=["snapshot"])


def _first_read(images, *, unlike: bool) -> None:
    """The earlier version's readings of ``images``: all unlike the training images, or all familiar."""
    earlier = ModelVersionFactory(status=ModelVersion.Status.RETIRED)
    for img in images:
        if unlike:
            PredictionFactory(image=img, model_version=earlier, abstained=True, reasons=[OUT_OF_DISTRIBUTION])
        else:
            PredictionFactory(image=img, model_version=earlier)


def test_a_source_first_read_as_unlike_is_new_and_counted_per_class():
    scope_b, scope_c = SourceFactory(name="Scope B"), SourceFactory(name="Scope C")
    b_mono = CellImageFactory.create_batch(4, acquisition_source=scope_b)
    b_lymph = CellImageFactory.create_batch(2, acquisition_source=scope_b)
    c_cells = CellImageFactory.create_batch(3, acquisition_source=scope_c)
    _first_read(b_mono + b_lymph[:1], unlike=True)  # 5 of 6 read first as unlike: new
    _first_read(b_lymph[1:], unlike=False)
    _first_read(c_cells, unlike=False)  # a second microscope the model found familiar: not new
    # a later version's reading does not change what the first one said
    later = ModelVersionFactory(status=ModelVersion.Status.RETIRED)
    for img in b_mono:
        PredictionFactory(image=img, model_version=later)
    version = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    _trained_on(version, {"monocyte": b_mono, "lymphocyte": b_lymph, "neutrophil_segmented": c_cells})
    learned = new_sources(version)
    assert set(learned) == {scope_b.pk}
    assert dict(learned[scope_b.pk]) == {"monocyte": 4, "lymphocyte": 2}


def test_a_source_whose_cells_were_never_read_or_mostly_familiar_is_not_new():
    scope = SourceFactory()
    never_read = CellImageFactory.create_batch(2, acquisition_source=scope)
    version = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    _trained_on(version, {"monocyte": never_read})
    assert new_sources(version) == {}
    familiar = CellImageFactory.create_batch(3, acquisition_source=scope)
    _first_read(familiar[:1], unlike=True)
    _first_read(familiar[1:], unlike=False)
    _trained_on(version, {"monocyte": familiar})
    assert new_sources(version) == {}


def test_the_model_s_calls_on_a_new_source_are_referred_until_its_class_is_learned(active_model, labeller,
                                                                                     demo_cells):
    scope = SourceFactory(name="Scope B")
    # the active version was trained on Scope B's cells that an earlier version had found unlike:
    # enough lymphocytes, one neutrophil too few and no monocyte
    enough = CellImageFactory.create_batch(MIN_CELLS_PER_CLASS, acquisition_source=scope)
    too_few = CellImageFactory.create_batch(MIN_CELLS_PER_CLASS - 1, acquisition_source=scope)
    more = CellImageFactory.create_batch(1, acquisition_source=scope)
    _first_read(enough + too_few + more, unlike=True)
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
    for i in at_home:  # the default source is not new: nothing held back
        assert NEW_SOURCE_FEW_CELLS not in preds[i].reasons

    # once every class the model calls has enough of the source's cells, its decisions stand
    learned = {code: CellImageFactory.create_batch(MIN_CELLS_PER_CLASS, acquisition_source=scope) for code in calls}
    _first_read([img for imgs in learned.values() for img in imgs], unlike=True)
    _trained_on(active_model, learned)
    preds = classify()
    assert not any(NEW_SOURCE_FEW_CELLS in preds[i].reasons for i in on_b + at_home)


def test_the_new_source_reasons_sit_after_the_out_of_distribution_ones_most_serious_first():
    from collections import Counter

    from classifier.ml.engine import CellPrediction
    from classifier.new_sources import refer_new_source, refer_unlearned

    def pred(reasons, top="monocyte"):
        return CellPrediction(label="unidentified" if reasons else top, top_class=top, confidence=0.5, agreement=1,
                              n_backbones=1, abstained=bool(reasons), reasons=list(reasons))

    unlike, low, accepted = pred([OUT_OF_DISTRIBUTION, "low_confidence"]), pred(["low_confidence"]), pred([])
    assert refer_new_source([unlike, low, accepted]) == 1  # one had been accepted
    assert unlike.reasons == [OUT_OF_DISTRIBUTION, "new_source", "low_confidence"]
    assert low.reasons == ["new_source", "low_confidence"]
    assert (accepted.reasons, accepted.abstained, accepted.label) == (["new_source"], True, "unidentified")

    unlike, split, learned, accepted = (pred([OUT_OF_DISTRIBUTION]), pred(["split_vote"]), pred([], top="lymphocyte"),
                                        pred([]))
    assert refer_unlearned([unlike, split, learned, accepted],
                           Counter({"lymphocyte": MIN_CELLS_PER_CLASS, "monocyte": MIN_CELLS_PER_CLASS - 1})) == 1
    assert unlike.reasons == [OUT_OF_DISTRIBUTION]  # already referred as unlike: that reason alone
    assert split.reasons == [NEW_SOURCE_FEW_CELLS, "split_vote"]
    assert (learned.reasons, learned.abstained) == ([], False)
    assert (accepted.reasons, accepted.abstained) == ([NEW_SOURCE_FEW_CELLS], True)
