"""Scoring one sitting of a proficiency test against the reference labels (no Django here).

Kappa, the confusion matrix and the per-class sensitivity and positive predictive value come from
scikit-learn; the 95 % interval of the overall agreement is the Wilson score interval from
statsmodels. An answer marked "not sure", a cell left unanswered and a cell the model referred are
all scored as not correct (they count under the column ``NOT_CALLED``).
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support
from statsmodels.stats.proportion import proportion_confint

NOT_CALLED = "(not called)"


@dataclass(frozen=True)
class Item:
    """One cell: its reference class, the class given (None: none), whether the taker was not sure (or
    the model referred it), and the seconds spent on it (None: not timed)."""

    position: int
    reference: str
    given: str | None
    unsure: bool = False
    seconds: float | None = None
    referred: bool = False

    @property
    def called(self) -> str:
        """The class this item counts under: the class given, or NOT_CALLED."""
        return self.given if (self.given and not self.unsure and not self.referred) else NOT_CALLED

    @property
    def correct(self) -> bool:
        return self.called == self.reference


def _finite(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def score(items: list[Item], *, classes: list[str], min_agreement: float, critical: list[str]) -> dict:
    """The score of one sitting as a JSON-ready dict: ``n``, ``correct``, ``agreement`` with its
    ``agreement_ci`` (Wilson, 95 %), ``kappa``, ``per_class`` (sensitivity, PPV), ``labels`` and
    ``confusion`` (rows: reference, columns: called), ``confusions`` (off-diagonal cells, most first),
    ``not_sure``, ``referred``, ``critical_misses``, time per cell, and ``passed`` with ``reasons``."""
    n = len(items)
    if not n:
        raise ValueError("A test without cells cannot be scored.")
    refs = [i.reference for i in items]
    calls = [i.called for i in items]
    seen = set(refs) | {c for c in calls if c != NOT_CALLED}
    labels = [c for c in classes if c in seen] + sorted(seen - set(classes))
    matrix_labels = labels + [NOT_CALLED]
    correct = sum(i.correct for i in items)
    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = _finite(cohen_kappa_score(refs, calls, labels=matrix_labels)) if len(set(refs) | set(calls)) > 1 else None
        ppv, sens, _, support = precision_recall_fscore_support(refs, calls, labels=labels, zero_division=math.nan)
    matrix = confusion_matrix(refs, calls, labels=matrix_labels)
    per_class = []
    for k, code in enumerate(labels):
        per_class.append({
            "class": code, "n": int(support[k]), "correct": int(matrix[k, k]),
            "called": int(matrix[:, k].sum()),
            "sensitivity": _finite(sens[k]) if support[k] else None,
            "ppv": _finite(ppv[k]) if matrix[:, k].sum() else None,
        })
    confusions = sorted(
        ({"reference": matrix_labels[r], "called": matrix_labels[c], "count": int(matrix[r, c])}
         for r in range(len(labels)) for c in range(len(matrix_labels)) if r != c and matrix[r, c]),
        key=lambda d: (-d["count"], d["reference"], d["called"]))
    critical_misses = [{"position": i.position, "reference": i.reference, "called": i.called}
                       for i in items if i.reference in critical and not i.correct]
    timed = [i.seconds for i in items if i.seconds is not None]
    agreement = correct / n
    reasons = []
    if agreement < min_agreement:
        reasons.append(f"overall agreement {agreement:.1%} is under the minimum {min_agreement:.1%}")
    for miss in critical_misses:
        reasons.append(f"cell {miss['position']}: {miss['reference']} (critical) called {miss['called']}")
    return {
        "n": n, "correct": correct, "agreement": agreement, "agreement_ci": [float(low), float(high)],
        "kappa": kappa, "labels": labels, "matrix_labels": matrix_labels, "confusion": matrix[:len(labels)].tolist(),
        "per_class": per_class, "confusions": confusions,
        "not_sure": sum(1 for i in items if i.unsure and not i.referred),
        "unanswered": sum(1 for i in items if not i.given and not i.referred),
        "referred": sum(1 for i in items if i.referred),
        "agreement_called": (sum(i.correct for i in items if i.called != NOT_CALLED)
                             / max(1, sum(1 for i in items if i.called != NOT_CALLED))),
        "critical_misses": critical_misses,
        "seconds_total": float(sum(timed)) if timed else None,
        "seconds_mean": float(statistics.fmean(timed)) if timed else None,
        "seconds_median": float(statistics.median(timed)) if timed else None,
        "min_agreement": min_agreement, "critical": list(critical),
        "passed": not reasons, "reasons": reasons,
    }


def confusions_across(results: list[dict], *, top: int = 10) -> list[dict]:
    """The off-diagonal confusions summed over several scored sittings, most first."""
    total: dict[tuple[str, str], int] = {}
    for result in results:
        for c in result.get("confusions", []):
            key = (c["reference"], c["called"])
            total[key] = total.get(key, 0) + c["count"]
    ordered = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"reference": r, "called": c, "count": n} for (r, c), n in ordered]
