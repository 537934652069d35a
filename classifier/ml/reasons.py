"""Why a cell is referred to an expert instead of being accepted: codes (stored with each
prediction) and their words. No torch here, so that the web side can import it cheaply."""

from __future__ import annotations

from typing import Sequence

# most serious first
OUT_OF_DISTRIBUTION = "out_of_distribution"
# one source's batch (a slide, an upload, a classify call) as a whole unlike the training images,
# though this cell alone is not (a blur, another camera scale: classifier.ml.ood)
BATCH_UNLIKE = "batch_unlike"
# far from most training images, near a few (e.g. a lab's first verified cells from its own
# microscope) whose classes do not back the vote
NEIGHBOURS_DISAGREE = "neighbours_disagree"
# near only a few training images of the voted class (classifier.ml.ood's class support), e.g. a
# lab's first handful of verified cells of that class from its own microscope
THIN_SUPPORT = "thin_support"
# from a microscope/camera (a source other than the lab's default) that no image the model trained
# on came from: every cell of a new source is referred until its verified cells train a version
NEW_SOURCE = "new_source"
# from a source the model trained on too few verified cells of the voted class yet
# (classifier.new_sources)
NEW_SOURCE_FEW_CELLS = "new_source_few_cells"
SPLIT_VOTE = "split_vote"
LOW_CONFIDENCE = "low_confidence"
REASON_TEXT = {
    OUT_OF_DISTRIBUTION: "unlike the training images",
    BATCH_UNLIKE: "its batch as a whole is unlike the training images",
    NEIGHBOURS_DISAGREE: "the few training images like it disagree",
    THIN_SUPPORT: "few training images of this class like it",
    NEW_SOURCE: "a source the model was not trained on",
    NEW_SOURCE_FEW_CELLS: "too few verified cells of this class from this source yet",
    SPLIT_VOTE: "split vote",
    LOW_CONFIDENCE: "low confidence",
}

# the codes, most serious first, for a field's help text (the stored reasons and the API's)
CODES_HELP = "Codes, most serious first: " + ", ".join(REASON_TEXT) + "."


def reason_text(reasons: Sequence[str]) -> str:
    """The reasons, in words, most serious first ("" when the cell was accepted)."""
    return "; ".join(REASON_TEXT.get(r, r) for r in reasons)
