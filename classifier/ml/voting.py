"""Combining backbones: majority (hard) vote with ties broken by mean probability, soft vote,
abstention, and the abstention trade-off curve. Pure numpy."""

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


def abstain_mask(result: VoteResult, *, threshold: float, min_agreement: int) -> np.ndarray:
    """True where the cell should be referred to an expert: split vote or low confidence."""
    return (result.agreement < min_agreement) | (result.confidence < threshold)


def abstention_curve(
    per_backbone: np.ndarray,
    y_true: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    min_agreement: int | None = None,
    voting: str = "majority",
) -> list[dict]:
    """Trade-off of the confidence threshold: for each threshold, the accuracy on the cells
    the system accepts and the share it refers to an expert (also counting split votes)."""
    p = np.asarray(per_backbone)
    y = np.asarray(y_true)
    res = vote(p, voting)
    k = default_min_agreement(p.shape[0]) if min_agreement is None else min_agreement
    if thresholds is None:
        thresholds = np.round(np.linspace(0.0, 0.99, 100), 2)
    out = []
    for t in thresholds:
        ab = abstain_mask(res, threshold=float(t), min_agreement=k)
        acc_mask = ~ab
        n_acc = int(acc_mask.sum())
        out.append({
            "threshold": float(t),
            "accuracy_accepted": float((res.label[acc_mask] == y[acc_mask]).mean()) if n_acc else float("nan"),
            "referred": float(ab.mean()) if len(y) else 0.0,
            "accepted": n_acc,
        })
    return out


def choose_threshold(curve: list[dict], target_accuracy: float = 0.99, max_referred: float = 0.2) -> float:
    """The lowest threshold whose accuracy on accepted cells reaches the target without
    referring more than ``max_referred``; else the threshold of best accuracy within that
    referral budget."""
    ok = [c for c in curve if c["referred"] <= max_referred and c["accepted"] > 0]
    if not ok:
        return 0.0
    for c in ok:
        if c["accuracy_accepted"] >= target_accuracy:
            return c["threshold"]
    return max(ok, key=lambda c: (c["accuracy_accepted"], -c["threshold"]))["threshold"]
