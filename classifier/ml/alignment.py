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

**Class-balanced, with the source's own class mix** (:func:`class_balanced`). A source's cells
are not mixed like the training cells: a slide is mostly neutrophils, and bccd-dev holds 5 of the 9
classes. A plain mean carries that mix into the shift, and heads trained on 9 balanced classes keep
guessing the classes the source does not have. So, where the checkpoint stores its training cells'
class frequencies, the step alternates (expectation-maximisation): the aligned heads' probabilities
estimate the source's class frequencies; each cell is weighted by the training frequency over the
source's (its class's, as the heads read it) so that the source's statistics are taken over the
training cells' class mix; the features are aligned again with those weighted statistics. Finally
the probabilities are adjusted from the training class frequencies to the source's, estimated by
the EM of Saerens, Latinne and Decaestecker (2002, "Adjusting the outputs of a classifier to new a
priori probabilities"). Measured on the k = 0 model (docs/ml.md): bccd-dev's best guess 40.1 → 60.6 %;
on the synthetic labs, whose cells are balanced over all 9 classes, 87.4 → 86.0 % (stain) and
87.0 → 86.9 % (second stain model): the estimated mix is never exactly even there.

Measured in docs/ml.md (``benchmarks/adaptation.py``, best guess with and without the step).
"""

from __future__ import annotations

import numpy as np

MIN_CELLS = 30  # fewer cells cannot estimate a mean and a spread per feature
MIN_SHARE = 0.5  # the flagged cells must be most of the batch
EPS = 1e-3
EM_ROUNDS = 8  # alignment <-> class frequencies (the best guess stopped moving after 5-6 on bccd-dev)
PRIOR_ROUNDS = 50  # Saerens' EM of the source's class frequencies
FLOOR = 1e-6


def feature_stats(features: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and standard deviation of each feature over cells ([N, D] -> two [D] float32)."""
    f = np.asarray(features, dtype=np.float64)
    return {"mean": f.mean(0).astype(np.float32), "std": f.std(0).astype(np.float32)}


def applies(flags: np.ndarray) -> bool:
    """Whether a batch's out-of-distribution ``flags`` call for the aligned best guess."""
    flags = np.asarray(flags, dtype=bool)
    return bool(flags.sum() >= MIN_CELLS and flags.mean() >= MIN_SHARE)


def align(features: np.ndarray, home: dict, weights: np.ndarray | None = None) -> np.ndarray:
    """``features`` [N, D] of one source's cells, standardised by their own statistics (each cell
    counted with its ``weights``, by default equally) and mapped onto ``home``'s
    (:func:`feature_stats` of the training cells)."""
    f = np.asarray(features, dtype=np.float64)
    if weights is None:
        mean, std = f.mean(0), f.std(0)
    else:
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        mean = (w[:, None] * f).sum(0)
        std = np.sqrt((w[:, None] * (f - mean) ** 2).sum(0))
    home_mean = np.asarray(home["mean"], dtype=np.float64)
    home_std = np.asarray(home["std"], dtype=np.float64)
    return ((f - mean) / (std + EPS) * home_std + home_mean).astype(np.float32)


def source_prior(proba: np.ndarray, prior: np.ndarray, rounds: int = PRIOR_ROUNDS) -> np.ndarray:
    """The source's class frequencies [C] estimated from ``proba`` [N, C] (posteriors under the
    training frequencies ``prior``), by Saerens et al.'s EM."""
    p = np.asarray(proba, dtype=np.float64)
    prior = np.maximum(np.asarray(prior, dtype=np.float64), FLOOR)
    pi = prior.copy()
    for _ in range(rounds):
        q = p * (pi / prior)
        q /= np.maximum(q.sum(1, keepdims=True), FLOOR)
        pi = q.mean(0)
    return pi


def adjust(proba: np.ndarray, prior: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Posteriors [N, C] under the training frequencies ``prior`` re-weighted to ``source``'s."""
    q = np.asarray(proba, dtype=np.float64) * (np.asarray(source, dtype=np.float64)
                                               / np.maximum(np.asarray(prior, dtype=np.float64), FLOOR))
    return (q / np.maximum(q.sum(1, keepdims=True), FLOOR)).astype(np.float32)


def class_balanced(read, features: dict[str, np.ndarray], home: dict[str, dict],
                   prior: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The aligned probabilities of one source's cells, class-balanced (see the module's notes).
    ``read(backbone, aligned features [N, D]) -> [N, C]`` calibrated probabilities of that backbone's
    head; ``features``: backbone -> [N, D]; ``home``: backbone -> :func:`feature_stats` of the
    training cells; ``prior``: the training cells' class frequencies [C]. Returns each backbone's
    probabilities adjusted to the source's class frequencies, and those frequencies."""
    prior = np.maximum(np.asarray(prior, dtype=np.float64), FLOOR)
    n = len(next(iter(features.values())))
    weights = np.ones(n)
    for _ in range(EM_ROUNDS):
        per = {b: np.asarray(read(b, align(f, home[b], weights)), dtype=np.float64)
               for b, f in features.items()}
        mean = np.mean(list(per.values()), axis=0)
        weights = (mean * (prior / np.maximum(mean.mean(0), FLOOR))).sum(1)
    source = source_prior(mean, prior)
    return {b: adjust(p, prior, source) for b, p in per.items()}, source
