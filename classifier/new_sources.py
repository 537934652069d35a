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
training set is referred whole (reason ``new_source``, :func:`refer_new_source`; the sources
page promises it), except the lab's default source, guarded by the out-of-distribution check.
"""
from __future__ import annotations

from collections import Counter

from annotations.models import CellImage
from classifier.ml.reasons import NEIGHBOURS_DISAGREE, NEW_SOURCE, NEW_SOURCE_FEW_CELLS, OUT_OF_DISTRIBUTION
from classifier.ml.voting import UNIDENTIFIED

from .models import ModelVersion, Prediction

MIN_CELLS_PER_CLASS = 10
ID_CHUNK = 5000
NEW_SHARE = 0.5  # a source is new when at least this share of its training cells was first read as unlike


def new_sources(version: ModelVersion) -> dict[int, Counter]:
    """The sources new to the model that this version was trained on: source id -> its training
    cells per class code."""
    label_of = {int(row[0]): row[2] for row in version.snapshot.get("items", []) if len(row) >= 3}
    if not label_of:
        return {}
    pks = sorted(label_of)
    source_of, first = {}, {}
    for start in range(0, len(pks), ID_CHUNK):  # SQLite limits the number of query parameters
        chunk = pks[start:start + ID_CHUNK]
        source_of.update(CellImage.objects.filter(pk__in=chunk).values_list("pk", "acquisition_source_id"))
        for image_id, reasons in (Prediction.objects.filter(image_id__in=chunk)
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


def _refer(p, reason: str) -> bool:
    """Refer the engine's CellPrediction ``p`` (in place) with ``reason``, placed after the
    out-of-distribution reasons and before split vote and low confidence (most serious first).
    Returns whether it had been accepted."""
    was_accepted = not p.abstained
    p.abstained = True
    p.label = UNIDENTIFIED
    if reason not in p.reasons:
        at = sum(r in (OUT_OF_DISTRIBUTION, NEIGHBOURS_DISAGREE, NEW_SOURCE) for r in p.reasons)
        p.reasons = [*p.reasons[:at], reason, *p.reasons[at:]]
    return was_accepted


def refer_new_source(predictions) -> int:
    """Refer every call on cells of a source the version was never trained on (its top class stays
    the best guess). Returns how many had been accepted."""
    return sum(_refer(p, NEW_SOURCE) for p in predictions)


def refer_unlearned(predictions, counts: Counter) -> int:
    """Refer each call, on cells of one new source, of a class with fewer than
    :data:`MIN_CELLS_PER_CLASS` of that source's cells in training (``counts``: class code -> cells,
    from :func:`new_sources`); a cell already referred as unlike the training images keeps that
    reason alone. Returns how many calls it held back that had been accepted."""
    return sum(_refer(p, NEW_SOURCE_FEW_CELLS) for p in predictions
               if OUT_OF_DISTRIBUTION not in p.reasons and counts.get(p.top_class, 0) < MIN_CELLS_PER_CLASS)
