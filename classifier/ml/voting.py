"""Combining backbones: majority (hard) vote with ties broken by mean probability, soft vote,
abstention, the abstention trade-off curve, and the confidence threshold a version applies
(:func:`fit_threshold` when it is trained, :func:`checkpoint_threshold` when it is loaded).
Pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIDENTIFIED = "unidentified"
VOTINGS = ("majority", "soft")


@dataclass
class VoteResult:
    label: np.ndarray  # [N] voted class index
    agreement: np.ndarray  # [N] number of backbones whose top class is the voted class
    confidence: np.ndarray  # [N] mean (calibrated) probability of the voted class
    mean_proba: np.ndarray  # [N, C]
    tied: np.ndarray  # [N] True where several classes had the most votes (the mean probability chose)


def default_min_agreement(n_backbones: int) -> int:
    """A strict majority (2 of 3, 3 of 5; 1 of 1)."""
    return n_backbones // 2 + 1


def vote(per_backbone: np.ndarray, voting: str = "majority") -> VoteResult:
    """``per_backbone``: probabilities [B, N, C] (B backbones).

    majority: each backbone votes for its top class; the most votes win; a tie between
    classes is broken by the higher mean probability. soft: the class of highest mean
    probability. Either way ``agreement`` counts the backbones whose top class is the
    winner and ``confidence`` is the winner's mean probability."""
    p = np.asarray(per_backbone, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError("per_backbone must be [backbones, cells, classes]")
    n_b, n, c = p.shape
    mean = p.mean(0)
    tops = p.argmax(2)  # [B, N]
    counts = np.zeros((n, c), dtype=np.int64)
    for b in range(n_b):
        counts[np.arange(n), tops[b]] += 1
    if voting == "majority":
        # lexicographic: most votes, then the highest mean probability
        best = counts.max(1, keepdims=True)
        score = np.where(counts == best, mean, -np.inf)
        label = score.argmax(1)
    elif voting == "soft":
        label = mean.argmax(1)
    else:
        raise ValueError(f"voting must be one of {VOTINGS}, not {voting!r}")
    agreement = counts[np.arange(n), label]
    confidence = mean[np.arange(n), label]
    tied = (counts == counts.max(1, keepdims=True)).sum(1) > 1
    return VoteResult(label=label, agreement=agreement, confidence=confidence, mean_proba=mean, tied=tied)


def abstain_mask(result: VoteResult, *, threshold: float, min_agreement: int,
                 referred_anyway: np.ndarray | None = None) -> np.ndarray:
    """True where the cell should be referred to an expert: split vote, low confidence, or
    (``referred_anyway``) a reason that does not depend on the vote (unlike the training images)."""
    mask = (result.agreement < min_agreement) | (result.confidence < threshold)
    return mask if referred_anyway is None else mask | np.asarray(referred_anyway, dtype=bool)


CURVE_THRESHOLDS = np.round(np.linspace(0.0, 0.99, 100), 2)


def abstention_curve(
    per_backbone: np.ndarray,
    y_true: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    min_agreement: int | None = None,
    voting: str = "majority",
    referred_anyway: np.ndarray | None = None,
) -> list[dict]:
    """Trade-off of the confidence threshold under the whole referral rule: for each threshold,
    the accuracy on the cells the system accepts and the share it refers to an expert (split
    votes, under ``min_agreement`` backbones agreeing, are referred at every threshold, and so
    are the cells of ``referred_anyway``)."""
    p = np.asarray(per_backbone)
    y = np.asarray(y_true)
    res = vote(p, voting)
    k = default_min_agreement(p.shape[0]) if min_agreement is None else min_agreement
    if thresholds is None:
        thresholds = CURVE_THRESHOLDS
    out = []
    for t in thresholds:
        ab = abstain_mask(res, threshold=float(t), min_agreement=k, referred_anyway=referred_anyway)
        acc_mask = ~ab
        n_acc = int(acc_mask.sum())
        out.append({
            "threshold": float(t),
            "accuracy_accepted": float((res.label[acc_mask] == y[acc_mask]).mean()) if n_acc else float("nan"),
            "referred": float(ab.mean()) if len(y) else 0.0,
            "accepted": n_acc,
        })
    return out


def choose_threshold(curve: list[dict], target_accuracy: float = 0.99, max_referred: float = 0.2) -> float | None:
    """The lowest threshold whose accuracy on accepted cells reaches the target without
    referring more than ``max_referred``; else the threshold of best accuracy within that
    referral budget; None when no threshold of ``curve`` keeps to the budget."""
    ok = [c for c in curve if c["referred"] <= max_referred and c["accepted"] > 0]
    if not ok:
        return None
    for c in ok:
        if c["accuracy_accepted"] >= target_accuracy:
            return c["threshold"]
    return max(ok, key=lambda c: (c["accuracy_accepted"], -c["threshold"]))["threshold"]


# --- The threshold a version applies -------------------------------------------------------
# Every version applies a confidence threshold: fitted on its validation cells where there are
# enough of them, else a conservative default. Never 0: a cell whose vote is below the threshold
# is referred to an expert ("low confidence"), whatever the agreement of the backbones.

#: A fit needs this many validation cells: its target is 99 % right among the accepted cells,
#: and fewer than 100 cells cannot tell 99 % from 100 %.
MIN_FIT_CELLS = 100
#: No fit goes below even odds: the vote's own mean probability must at least favour its class.
MIN_THRESHOLD = 0.5
#: The threshold of a version whose validation split is too small to fit one (the demo's first
#: model, a lab's first few hundred cells): conservative, a weak model refers most cells. Measured
#: in docs/ml.md ("The abstention threshold"): the demo's model accepts 2.0 % of cells wrongly at
#: 0.80 (7.5 % at 0.60, 29 % at the 0 it applied before).
DEFAULT_THRESHOLD = 0.8

FITTED = "validation"
DEFAULT = "default"


@dataclass(frozen=True)
class Threshold:
    """The confidence threshold a version applies, where it comes from (:data:`FITTED` or
    :data:`DEFAULT`) and why, in words."""

    value: float
    source: str
    why: str

    def as_dict(self) -> dict:
        return {"threshold": self.value, "threshold_source": self.source, "threshold_why": self.why}


def default_threshold(why: str) -> Threshold:
    return Threshold(DEFAULT_THRESHOLD, DEFAULT, f"conservative default: {why}")


def fit_threshold(curve: list[dict], *, n_cells: int, target_accuracy: float = 0.99,
                  max_referred: float = 0.2) -> Threshold:
    """The threshold of a version from its validation ``curve`` (:func:`abstention_curve` on
    ``n_cells`` validation cells): :func:`choose_threshold` among the thresholds from
    :data:`MIN_THRESHOLD` up; the conservative default where there are fewer than
    :data:`MIN_FIT_CELLS` cells or no such threshold keeps to the referral budget."""
    if n_cells < MIN_FIT_CELLS:
        return default_threshold(f"{n_cells} validation cells, a fit needs at least {MIN_FIT_CELLS}")
    t = choose_threshold([c for c in curve if c["threshold"] >= MIN_THRESHOLD], target_accuracy, max_referred)
    if t is None:
        return default_threshold(f"no threshold from {MIN_THRESHOLD:.2f} up refers at most {max_referred:.0%} "
                                 f"of the {n_cells} validation cells")
    return Threshold(float(t), FITTED, f"fitted on {n_cells} validation cells (target {target_accuracy:.0%} right "
                                       f"among the accepted, at most {max_referred:.0%} referred)")


def checkpoint_threshold(ckpt: dict) -> Threshold:
    """The threshold a checkpoint applies. One written before every version had a threshold
    (no ``threshold_source``; its ``default_threshold`` may be 0) gets it now, by the same rule,
    from the validation curve in its metrics: never a silent 0."""
    if ckpt.get("threshold_source") in (FITTED, DEFAULT):
        return Threshold(float(ckpt["default_threshold"]), ckpt["threshold_source"], str(ckpt.get("threshold_why", "")))
    metrics = ckpt.get("metrics") or {}
    config = ckpt.get("config") or {}
    curve = metrics.get("abstention_curve") or []
    if metrics.get("untrained") or not curve:
        return default_threshold("the checkpoint has no validation curve to fit one on")
    return fit_threshold(curve, n_cells=int(metrics.get("n_val") or 0),
                         target_accuracy=float(config.get("target_accuracy", 0.99)),
                         max_referred=float(config.get("max_referred", 0.2)))
