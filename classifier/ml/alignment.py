"""The best guess for cells of a new microscope: their features aligned to the training cells'.

A cell unlike the training images is referred to an expert (:mod:`classifier.ml.ood`) and shown
with the model's best guess, so that the reviewer confirms rather than searches. On a new
microscope and stain every cell is such a cell, and the heads, read on features that moved as a
whole, guess badly (docs/ml.md: 9-11 % right on bccd-dev crops). Much of that move is common to
the source's cells: a shift and a scaling of each feature. Re-estimating those statistics on the
new source's own unlabelled cells, and mapping them onto the training cells' (the idea of AdaBN,
Li et al. 2016, applied to the features the heads read), recovers much of the guess.

The rule, applied to one batch of cells of one source (a slide, an upload batch, one ``classify``
call): when at least :data:`MIN_CELLS` cells are unlike the training images and they are at least
:data:`MIN_SHARE` of the batch (the batch as a whole comes from somewhere else, not a few odd
cells of the home microscope), each of those cells' features is standardised by their own mean and
spread and mapped onto the training features' mean and spread, and the heads read them again. Only
those cells' best guesses change: they stay referred, with the same reason; no cell is accepted
because of this step. A checkpoint without the training features' statistics (trained before
them) keeps the plain best guess.

Measured in docs/ml.md (``benchmarks/adaptation.py``, best guess with and without the step).
"""

from __future__ import annotations

import numpy as np

MIN_CELLS = 30  # fewer cells cannot estimate a mean and a spread per feature
MIN_SHARE = 0.5  # the flagged cells must be most of the batch
EPS = 1e-3


def feature_stats(features: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and standard deviation of each feature over cells ([N, D] -> two [D] float32)."""
    f = np.asarray(features, dtype=np.float64)
    return {"mean": f.mean(0).astype(np.float32), "std": f.std(0).astype(np.float32)}


def applies(flags: np.ndarray) -> bool:
    """Whether a batch's out-of-distribution ``flags`` call for the aligned best guess."""
    flags = np.asarray(flags, dtype=bool)
    return bool(flags.sum() >= MIN_CELLS and flags.mean() >= MIN_SHARE)


def align(features: np.ndarray, home: dict) -> np.ndarray:
    """``features`` [N, D] of one source's cells, standardised by their own statistics and mapped
    onto ``home``'s (:func:`feature_stats` of the training cells)."""
    f = np.asarray(features, dtype=np.float64)
    mean, std = f.mean(0), f.std(0)
    home_mean = np.asarray(home["mean"], dtype=np.float64)
    home_std = np.asarray(home["std"], dtype=np.float64)
    return ((f - mean) / (std + EPS) * home_std + home_mean).astype(np.float32)
