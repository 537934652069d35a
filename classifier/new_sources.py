"""A source (microscope/camera) is learned class by class: until the model has trained on enough of
its verified cells of a class, its calls of that class on that source are referred.

* A source other than the lab's default that none of the version's training cells came from:
  every cell is referred (reason ``new_source``; the sources page promises it). The
  out-of-distribution check alone let 2-4 of 80 cells of a re-stained microscope through as
  accepted calls, and a blurred or magnified one is barely flagged at all.
* Once the lab has verified some of that source's cells and a version trained on them, a call of a
  class with fewer than :data:`MIN_CELLS_PER_CLASS` of that source's cells in the version's training
  set is referred (reason ``new_source_few_cells``). A handful of verified cells near a cell let
  the check through: on synthetic labs (docs/ml.md) the model accepted 3.4-4.3 % of a new source's
  other cells wrongly with 5 verified cells per class and 1.4-4.3 % with 10 (blur, magnification);
  with 20 per class 1.0-2.7 %, under the 3 % allowed.

The lab's default source is its own microscope, which a first model is made for: it is left to the
out-of-distribution check. The top class stays the best guess the reviewer confirms.
"""
from __future__ import annotations

from collections import Counter

from annotations.models import CellImage
from classifier.ml.reasons import (BATCH_UNLIKE, NEIGHBOURS_DISAGREE, NEW_SOURCE, NEW_SOURCE_FEW_CELLS,
                                   OUT_OF_DISTRIBUTION)
from classifier.ml.voting import UNIDENTIFIED

from .models import ModelVersion

MIN_CELLS_PER_CLASS = 20
ID_CHUNK = 5000  # ids per IN list (SQLite limits the number of query parameters)


def source_training_counts(version: ModelVersion, source_ids) -> dict[int, Counter]:
    """For each of ``source_ids``: the version's training cells from that source, per class code
    (an empty Counter for a source none of them came from)."""
    wanted = {pk for pk in source_ids if pk is not None}
    counts = {pk: Counter() for pk in wanted}
    if not wanted:  # the default source alone (the usual batch): nothing to read
        return counts
    label_of = {int(row[0]): row[2] for row in (version.snapshot or {}).get("items", []) if len(row) >= 3}
    pks = sorted(label_of)
    for start in range(0, len(pks), ID_CHUNK):
        for pk, source in (CellImage.objects.filter(pk__in=pks[start:start + ID_CHUNK], acquisition_source_id__in=wanted)
                           .values_list("pk", "acquisition_source_id")):
            counts[source][label_of[pk]] += 1
    return counts


def _refer(p, reason: str) -> bool:
    """Refer the engine's CellPrediction ``p`` (in place) with ``reason``, placed after the
    out-of-distribution reasons and before split vote and low confidence (most serious first).
    Returns whether it had been accepted."""
    was_accepted = not p.abstained
    p.abstained = True
    p.label = UNIDENTIFIED
    if reason not in p.reasons:
        at = sum(r in (OUT_OF_DISTRIBUTION, BATCH_UNLIKE, NEIGHBOURS_DISAGREE, NEW_SOURCE) for r in p.reasons)
        p.reasons = [*p.reasons[:at], reason, *p.reasons[at:]]
    return was_accepted


def refer_unlearned(predictions, counts: Counter) -> int:
    """Apply the rule (in place) to the calls on one non-default source's cells; ``counts``: that
    source's training cells per class (:func:`source_training_counts`). A source none of them came
    from: every call referred as ``new_source``; else a call of a class with fewer than
    :data:`MIN_CELLS_PER_CLASS` of them as ``new_source_few_cells`` (a cell already referred as
    unlike the training images keeps that reason alone). Returns how many had been accepted."""
    if not counts:
        return sum(_refer(p, NEW_SOURCE) for p in predictions)
    return sum(_refer(p, NEW_SOURCE_FEW_CELLS) for p in predictions
               if OUT_OF_DISTRIBUTION not in p.reasons and counts.get(p.top_class, 0) < MIN_CELLS_PER_CLASS)
