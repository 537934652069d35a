"""Classification metrics as pure functions (no Django).

Per class, one-vs-rest: accuracy (TP+TN)/all, sensitivity TP/(TP+FN), specificity TN/(TN+FP),
misdiagnosis rate FP/(FP+TN) (Yu et al., Table III). Intervals are Wilson 95% (statsmodels).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def confusion(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Rows actual, columns predicted."""
    index = {label: i for i, label in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for a, p in zip(actual, predicted):
        if a in index and p in index:
            m[index[a], index[p]] += 1
    return m


def _ratio(num: int, den: int) -> float | None:
    return float(num) / den if den else None


def wilson(successes: int, total: int, alpha: float = 0.05) -> list[float] | None:
    if total == 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(successes, total, alpha=alpha, method="wilson")
    return [float(lo), float(hi)]


def per_class(matrix: np.ndarray, labels: Sequence[str]) -> dict[str, dict]:
    total = int(matrix.sum())
    out = {}
    for i, label in enumerate(labels):
        tp = int(matrix[i, i])
        fn = int(matrix[i, :].sum()) - tp
        fp = int(matrix[:, i].sum()) - tp
        tn = total - tp - fn - fp
        out[label] = {
            "support": tp + fn,
            "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "accuracy": _ratio(tp + tn, total),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "misdiagnosis_rate": _ratio(fp, fp + tn),
            "precision": _ratio(tp, tp + fp),
            "sensitivity_ci": wilson(tp, tp + fn),
            "specificity_ci": wilson(tn, tn + fp),
        }
    return out


def summary(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Overall and per-class figures for one classifier on one set of cells."""
    labels = list(labels)
    m = confusion(actual, predicted, labels)
    total = int(m.sum())
    correct = int(np.trace(m))
    classes = per_class(m, labels)
    sens = [c["sensitivity"] for c in classes.values() if c["sensitivity"] is not None]
    f1s = []
    for c in classes.values():
        p, r = c["precision"], c["sensitivity"]
        if c["support"]:
            f1s.append(0.0 if not p or not r else 2 * p * r / (p + r))
    return {
        "n": total,
        "overall_accuracy": _ratio(correct, total),
        "overall_accuracy_ci": wilson(correct, total),
        "balanced_accuracy": float(np.mean(sens)) if sens else None,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "kappa": cohen_kappa(m),
        "per_class": classes,
        "confusion_matrix": {"labels": labels, "matrix": m.tolist(), "rows": "actual", "columns": "predicted"},
    }


def cohen_kappa(matrix: np.ndarray) -> float | None:
    total = matrix.sum()
    if total == 0:
        return None
    po = np.trace(matrix) / total
    pe = float((matrix.sum(axis=0) * matrix.sum(axis=1)).sum()) / (total * total)
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def abstention_curve(confidences: Sequence[float], correct: Sequence[bool], thresholds: Sequence[float] | None = None) -> list[dict]:
    """For each threshold: share of cells referred to experts and accuracy on the accepted ones."""
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if thresholds is None:
        thresholds = np.round(np.linspace(0.0, 0.99, 34), 3)
    rows = []
    for t in thresholds:
        accepted = conf >= t
        n_acc = int(accepted.sum())
        rows.append({
            "threshold": float(t),
            "referred_share": float(1 - n_acc / len(conf)) if len(conf) else 0.0,
            "accuracy_on_accepted": float(ok[accepted].mean()) if n_acc else None,
            "accepted": n_acc,
        })
    return rows


def table_ii(confusion_matrix: dict) -> dict:
    """The confusion matrix laid out like Yu et al., Table II: rows predicted, columns actual."""
    m = np.asarray(confusion_matrix["matrix"], dtype=int)
    if confusion_matrix.get("rows", "actual") == "actual":
        m = m.T
    return {"labels": list(confusion_matrix["labels"]), "matrix": m.tolist(), "rows": "predicted", "columns": "actual"}


def promotion_check(new: dict, old: dict, *, margin: float, names: dict[str, str] | None = None) -> tuple[bool, list[str]]:
    """The promotion gate on two summaries of the same cells (see :func:`summary`).

    Refused when the new overall accuracy is lower than the old one, or when any class's
    sensitivity drops by more than ``margin`` (a fraction, e.g. 0.02). ``names``: class code ->
    name for the reasons (the code where it has none)."""
    names = names or {}
    reasons = []
    eps = 1e-9
    new_acc, old_acc = new.get("overall_accuracy"), old.get("overall_accuracy")
    if old_acc is not None and (new_acc is None or new_acc < old_acc - eps):
        reasons.append(
            f"Overall accuracy {pct(new_acc)} is lower than the active version's {pct(old_acc)} "
            f"on the same {old.get('n', 0)} held-out cells."
        )
    new_classes = new.get("per_class", {})
    for code, old_c in old.get("per_class", {}).items():
        old_s = old_c.get("sensitivity")
        if old_s is None:
            continue
        new_s = (new_classes.get(code) or {}).get("sensitivity") or 0.0
        if old_s - new_s > margin + eps:
            reasons.append(
                f"Sensitivity for {names.get(code, code)} drops from {pct(old_s)} to {pct(new_s)} "
                f"(more than the allowed {pct(margin)})."
            )
    return not reasons, reasons


def paired_comparison(actual: Sequence[str], new: Sequence[str], old: Sequence[str], *, alpha: float = 0.05) -> dict:
    """Two classifiers on the same cells: how often each is right, where they differ, McNemar's exact
    test on the discordant cells (statsmodels), and the difference in accuracy with a 95% interval.

    ``new_only``: cells the new classifier gets right and the old one wrong; ``old_only`` the reverse.
    The interval of the difference is Bonett & Price's adjusted Wald interval for paired proportions
    (Stat. Med. 2012), which keeps its coverage with few discordant cells.
    """
    from scipy.stats import norm
    from statsmodels.stats.contingency_tables import mcnemar

    if not (len(actual) == len(new) == len(old)):
        raise ValueError("The three sequences must describe the same cells.")
    n = len(actual)
    new_ok = [a == p for a, p in zip(actual, new)]
    old_ok = [a == p for a, p in zip(actual, old)]
    both = sum(x and y for x, y in zip(new_ok, old_ok))
    new_only = sum(x and not y for x, y in zip(new_ok, old_ok))
    old_only = sum(y and not x for x, y in zip(new_ok, old_ok))
    neither = n - both - new_only - old_only
    out = {
        "n": n, "both_right": both, "new_only": new_only, "old_only": old_only, "both_wrong": neither,
        "new_accuracy": _ratio(both + new_only, n), "old_accuracy": _ratio(both + old_only, n),
        "new_accuracy_ci": wilson(both + new_only, n, alpha), "old_accuracy_ci": wilson(both + old_only, n, alpha),
        "difference": _ratio(new_only - old_only, n), "difference_ci": None, "mcnemar_p": None,
    }
    if n == 0:
        return out
    out["mcnemar_p"] = float(mcnemar([[both, new_only], [old_only, neither]], exact=True).pvalue)
    p12, p21 = (new_only + 1) / (n + 2), (old_only + 1) / (n + 2)
    diff = p12 - p21
    half = float(norm.ppf(1 - alpha / 2)) * math.sqrt(max(p12 + p21 - diff * diff, 0.0) / (n + 2))
    out["difference_ci"] = [max(-1.0, diff - half), min(1.0, diff + half)]
    return out


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal, 'n/a' for None."""
    return "n/a" if x is None else f"{100 * x:.1f}%"
