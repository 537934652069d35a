"""A source new to the model, learned from too few of its cells: its calls are referred.

A lab's first cells from a microscope the model found unlike its training images are all referred
("unlike the training images"). Once the lab verifies some of them and retrains, those cells are in
the training set and the out-of-distribution check lets that source's cells through: a handful of
verified cells near a cell are enough. With 5 verified cells per class the model accepted 3.4-4.3 %
of such a source's other cells wrongly; with 10 per class at most 1.4 % (docs/ml.md, adaptation).
So while a *new* source has fewer than :data:`MIN_CELLS_PER_CLASS` verified cells of the class the
model calls in that model version's training set, the call is referred, with the reason
``new_source_few_cells``: the model has not yet learned that class on that microscope.

A source is new to the model where most of its training cells were first read as unlike the training
images (their earliest prediction, by whichever version read them first). A second microscope the
model read as familiar from the start is not held back; a source with no verified cell in the
training set is left to the out-of-distribution check.
"""
from __future__ import annotations

from collections import Counter

from annotations.models import CellImage
from classifier.ml.reasons import NEIGHBOURS_DISAGREE, NEW_SOURCE_FEW_CELLS, OUT_OF_DISTRIBUTION
from classifier.ml.voting import UNIDENTIFIED

from .models import ModelVersion, Prediction

MIN_CELLS_PER_CLASS = 10
NEW_SHARE = 0.5  # a source is new when at least this share of its training cells was first read as unlike


def new_sources(version: ModelVersion) -> dict[int, Counter]:
    """The sources new to the model that this version was trained on: source id -> its training
    cells per class code."""
    label_of = {int(row[0]): row[2] for row in version.snapshot.get("items", []) if len(row) >= 3}
    if not label_of:
        return {}
    source_of = dict(CellImage.objects.filter(pk__in=label_of).values_list("pk", "acquisition_source_id"))
    first: dict[int, list] = {}
    for image_id, reasons in (Prediction.objects.filter(image_id__in=label_of)
                              .order_by("image_id", "created_at", "pk").values_list("image_id", "reasons")):
        first.setdefault(image_id, reasons or [])
    counts: dict[int, Counter] = {}
    read, unlike = Counter(), Counter()
    for pk, code in label_of.items():
        source = source_of.get(pk)
        if source is None:
            continue
        counts.setdefault(source, Counter())[code] += 1
        if pk in first:
            read[source] += 1
            unlike[source] += OUT_OF_DISTRIBUTION in first[pk]
    return {s: c for s, c in counts.items() if read[s] and unlike[s] >= NEW_SHARE * read[s]}


def refer_unlearned(predictions, source_ids, learned: dict[int, Counter]) -> int:
    """Refer (in place) each accepted or referred call on a new source's cell whose class has fewer
    than :data:`MIN_CELLS_PER_CLASS` of that source's cells in training. ``predictions``: the
    engine's CellPredictions, ``source_ids``: each one's source. Returns how many calls it held back."""
    held = 0
    for p, source in zip(predictions, source_ids):
        if source not in learned or OUT_OF_DISTRIBUTION in p.reasons:
            continue
        if learned[source].get(p.top_class, 0) >= MIN_CELLS_PER_CLASS:
            continue
        held += not p.abstained
        p.abstained = True
        p.label = UNIDENTIFIED
        if NEW_SOURCE_FEW_CELLS not in p.reasons:
            # after the out-of-distribution reasons, before split vote and low confidence
            at = sum(r in (OUT_OF_DISTRIBUTION, NEIGHBOURS_DISAGREE) for r in p.reasons)
            p.reasons = [*p.reasons[:at], NEW_SOURCE_FEW_CELLS, *p.reasons[at:]]
    return held
