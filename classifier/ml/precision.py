"""bf16 with an fp32 re-check near decisions.

On CPUs with native bf16 the frozen layers run about twice as fast in bf16, but bf16 shifts
every logit a little. Where a cell's answer is far from any decision boundary that shift
cannot change it; where it is close, the cell is computed again in fp32. The votes then
agree with fp32 while most cells run in bf16.

The rule, per batch (``z``: TTA-averaged logits [backbones, cells, classes] from bf16):

* a backbone's cell is recomputed in fp32 when its top-1 / top-2 logit margin is at most that
  backbone's logit tolerance (the spread of the bf16 shifts of one cell's logits, largest shift
  minus smallest, bounds how much any of its margins moved: a larger margin kept its top class);
* a whole cell (every backbone) is recomputed when the majority vote is tied (the tie is
  broken by mean probability, which bf16 may move), when the top-1 / top-2 margin of the
  mean probability (the soft vote) is at most the probability tolerance (the same spread, of
  the mean probabilities), when its confidence is within that tolerance of the lab's
  abstention threshold, or when its out-of-distribution score is within the OOD tolerance of
  that score's threshold (so bf16 never decides whether a cell is referred to an expert).

Tolerances are measured when the model is trained, on validation cells: the 98th percentile
of the spreads (the largest one is an outlier: on pbc-dev it re-checked 55-64 % of the
backbone results where the 98th percentile re-checks about 23 % with the same votes). A percentile is not a bound, so
the same step measures, on validation cells that did not set the tolerances, how often the
re-checked votes agree with fp32; the engine uses the re-check only where that agreement is
>= the bf16 rule's 99.5 %.
"""

from __future__ import annotations

import numpy as np

from .training import softmax_np
from .voting import vote

QUANTILE = 98  # tolerance: this percentile of the spreads seen on validation cells


def _probs(z: np.ndarray, temperatures) -> np.ndarray:
    """Calibrated probabilities [B, N, C] of logits [B, N, C], one temperature per backbone."""
    return np.stack([softmax_np(z[b], float(t)) for b, t in enumerate(temperatures)])


def _margin(a: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 along the last axis."""
    part = np.sort(a, axis=-1)
    return part[..., -1] - part[..., -2]


def recheck_mask(z: np.ndarray, temperatures: np.ndarray, logit_tol: np.ndarray, proba_tol: float,
                 threshold: float | None = None, *, ood: tuple | None = None) -> np.ndarray:
    """[backbones, cells] True where that backbone's result for that cell must be recomputed
    in fp32. ``z``: bf16 logits [B, N, C]; ``temperatures``, ``logit_tol``: [B];
    ``threshold``: the abstention threshold the result will be judged by; ``ood``: the cells'
    bf16 out-of-distribution measures [N, m], their thresholds [m] and tolerances [m]."""
    z = np.asarray(z, dtype=np.float64)
    redo = _margin(z) <= np.asarray(logit_tol, dtype=np.float64).reshape(z.shape[0], 1)
    res = vote(_probs(z, temperatures), "majority")
    close = _margin(res.mean_proba) <= float(proba_tol)
    if threshold is not None:
        close |= np.abs(res.confidence - float(threshold)) <= float(proba_tol)
    if ood is not None:
        close |= near_thresholds(*ood)
    return redo | (res.tied | close)[None, :]


def _spread(d: np.ndarray) -> np.ndarray:
    """Largest minus smallest along the last axis: how far any difference of two entries moved."""
    return d.max(-1) - d.min(-1)


def tolerances(z16: np.ndarray, z32: np.ndarray, temperatures: np.ndarray) -> tuple[np.ndarray, float]:
    """Per backbone, the :data:`QUANTILE` percentile over these cells of the spread of the
    bf16-minus-fp32 logit shifts of a cell; and the same for the mean probabilities."""
    z16 = np.asarray(z16, dtype=np.float64)
    z32 = np.asarray(z32, dtype=np.float64)
    logit = np.percentile(_spread(z16 - z32), QUANTILE, axis=1)
    shift = _probs(z16, temperatures).mean(0) - _probs(z32, temperatures).mean(0)
    return logit, float(np.percentile(_spread(shift), QUANTILE))


def rechecked(z16: np.ndarray, z32: np.ndarray, temperatures: np.ndarray, logit_tol, proba_tol,
              threshold: float | None = None, *, ood=None) -> tuple[np.ndarray, np.ndarray]:
    """What the engine would compute: bf16 logits with the flagged ones replaced by fp32.
    Returns (logits [B, N, C], mask [B, N]). ``ood``: (bf16 measures, thresholds, tolerances)."""
    mask = recheck_mask(z16, temperatures, logit_tol, proba_tol, threshold, ood=ood)
    return np.where(mask[..., None], z32, z16), mask


def _decisions(z: np.ndarray, temperatures: np.ndarray, threshold: float | None,
               ood_flags: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Majority vote, soft vote, (with a threshold) whether the cell is referred for its
    confidence and (with the out-of-distribution flags) whether it is flagged."""
    probs = _probs(z, temperatures)
    maj = vote(probs, "majority")
    out = (maj.label, vote(probs, "soft").label)
    if threshold is not None:
        out += (maj.confidence < float(threshold),)
    if ood_flags is not None:
        out += (np.asarray(ood_flags, dtype=bool),)
    return out


def _columns(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def near_thresholds(measures, thresholds, tolerances) -> np.ndarray:
    """[N] True where any of a cell's measures [N, m] is within its tolerance of its threshold."""
    m = _columns(measures)
    return (np.abs(m - np.asarray(thresholds, np.float64).reshape(1, -1))
            <= np.asarray(tolerances, np.float64).reshape(1, -1)).any(1)


def ood_tolerance(s16, s32) -> list[float]:
    """Per out-of-distribution measure, the :data:`QUANTILE` percentile of how far bf16 moved it."""
    return [float(v) for v in np.percentile(np.abs(_columns(s16) - _columns(s32)), QUANTILE, axis=0)]


def _held_out_agreement(z16: np.ndarray, z32: np.ndarray, temps: np.ndarray, threshold: float | None,
                        fit: np.ndarray, held: np.ndarray, ref: tuple, ood: tuple | None) -> tuple[int, int]:
    """Tolerances from the ``fit`` cells, the re-check applied to the ``held`` cells: how many of
    those have every decision of fp32's (``ref``, on all cells), and how many backbone results
    were recomputed. ``ood``: (bf16 measures, fp32 measures, thresholds [1, m]) of all cells."""
    lt, pt = tolerances(z16[:, fit], z32[:, fit], temps)
    held_ood, flags = None, None
    if ood is not None:
        s16, s32, ood_thresholds = ood
        held_ood = (s16[held], ood_thresholds[0], ood_tolerance(s16[fit], s32[fit]))
    z, mask = rechecked(z16[:, held], z32[:, held], temps, lt, pt, threshold, ood=held_ood)
    if ood is not None:  # near a threshold the whole cell is recomputed in fp32
        near = near_thresholds(*held_ood)[:, None]
        flags = np.where(near, s32[held], s16[held]) > ood_thresholds
    got = _decisions(z, temps, threshold, flags)
    same = int(np.logical_and.reduce([np.all(np.reshape(g == r[held], (len(held), -1)), axis=1)
                                      for g, r in zip(got, ref)]).sum())
    return same, int(mask.sum())


def ood_measures(ood, features_bf16: dict, features_fp32: dict, colour: np.ndarray) -> tuple:
    """The ``ood`` argument of :func:`check`: an out-of-distribution check's (``OODCheck``) score
    and its distance alone (which decides the neighbours' rule) from the features of the same
    cells in bf16 and fp32 (backbone -> [N, D]) and their colour statistics, with the class
    support where fitted (:func:`ood_rechecked_measures`), and their thresholds."""
    measured = [ood_rechecked_measures(ood, ood.assess(f, colour)) for f in (features_bf16, features_fp32)]
    return measured[0][0], measured[1][0], measured[0][1]


def ood_rechecked_measures(ood, assessment, columns: int | None = None) -> tuple[np.ndarray, list[float]]:
    """The out-of-distribution measures a bf16 result is re-checked on, [N, m], and their
    thresholds [m]: the score, its distance alone (the neighbours' rule) and, where fitted, the
    class support of every class (the voted class is not known yet; a cell near the support
    threshold of any class is re-checked). ``columns``: as many as the checkpoint's tolerances
    (one written before class support has two)."""
    measures = [assessment.score, assessment.distance]
    thresholds = [ood.threshold, ood.far_threshold]
    if assessment.support is not None and (columns is None or columns > 2):
        measures += list(np.nan_to_num(assessment.support, posinf=1e6).T)  # a class with < 2 cells: inf
        thresholds += [ood.support_threshold] * assessment.support.shape[1]
    return np.stack(measures, 1), thresholds


def check(z16: np.ndarray, z32: np.ndarray, temperatures: np.ndarray, threshold: float | None = None, *,
          ood: tuple | None = None) -> dict:
    """Measure bf16 against fp32 on validation cells (logits [B, N, C] in both precisions).

    ``agreement``: share of cells with the same majority vote in plain bf16. ``recheck``:
    tolerances from all cells (what the engine will use), and how often the re-checked result
    is the same as fp32's (majority vote, soft vote, given the abstention ``threshold`` whether
    the cell is referred, and given ``ood`` = (bf16 measures [N, m], fp32 measures, thresholds
    [m]) each out-of-distribution measure against its threshold: all of them), measured
    two-fold: tolerances from one half of the cells, agreement on the other half, and the other
    way round; with the share of backbone results recomputed in fp32 there."""
    z16 = np.asarray(z16, dtype=np.float64)
    z32 = np.asarray(z32, dtype=np.float64)
    temps = np.asarray(temperatures, dtype=np.float64)
    n = z16.shape[1]
    s16 = s32 = ood_thresholds = None
    if ood is not None:
        s16, s32 = _columns(ood[0]), _columns(ood[1])
        ood_thresholds = np.asarray(ood[2], np.float64).reshape(1, -1)
    ref = _decisions(z32, temps, threshold, None if ood is None else s32 > ood_thresholds)
    out = {"cells": int(n), "agreement": float((_decisions(z16, temps, None)[0] == ref[0]).mean()) if n else None}
    halves = [np.arange(n)[0::2], np.arange(n)[1::2]]
    same, redone, total = 0, 0, 0
    for fit, held in (halves, halves[::-1]):
        if not len(fit) or not len(held):
            continue
        s, r = _held_out_agreement(z16, z32, temps, threshold, fit, held, ref,
                                   None if ood is None else (s16, s32, ood_thresholds))
        same, redone, total = same + s, redone + r, total + len(held)
    lt, pt = tolerances(z16, z32, temps)
    out["recheck"] = {
        "logit_tolerance": [float(v) for v in lt],
        "proba_tolerance": pt,
        "ood_tolerance": ood_tolerance(s16, s32) if ood is not None else None,
        "threshold": threshold,
        "agreement": same / total if total else None,
        "rechecked_share": redone / (total * z16.shape[0]) if total else None,
    }
    return out
