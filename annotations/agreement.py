"""Inter-expert agreement (no Django here): Cohen's kappa per pair, Fleiss' kappa overall,
per-class specific agreement and the confusion between experts.

Input is a list of readings ``(image_id, rater, class_code)``: one current label per rater per image.
Kappas come from scikit-learn and statsmodels, not from home-made formulas.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa


@dataclass
class PairAgreement:
    rater_a: str
    rater_b: str
    n: int  # images both read
    observed: float  # share of those images where they agree
    kappa: float | None  # None when undefined (e.g. both always chose the same single class)


@dataclass
class ClassAgreement:
    code: str
    pairs: int  # pairs of readings on one image in which at least this reading is this class
    specific_agreement: float | None  # chance that a second reader agrees, given one said this class


@dataclass
class AgreementReport:
    n_images: int = 0  # images read by at least two experts
    n_readings: int = 0
    raters: list[str] = field(default_factory=list)
    pairs: list[PairAgreement] = field(default_factory=list)
    fleiss_kappa: float | None = None
    fleiss_n_images: int = 0
    fleiss_n_raters: int = 0
    observed: float | None = None  # overall pairwise observed agreement
    classes: list[str] = field(default_factory=list)
    per_class: list[ClassAgreement] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # symmetric, classes x classes, pairs of readings
    top_confusions: list[tuple[str, str, int]] = field(default_factory=list)


def _finite(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def agreement_report(readings: list[tuple[int, str, str]], *, classes: list[str] | None = None) -> AgreementReport:
    by_image: dict[int, dict[str, str]] = defaultdict(dict)
    for image_id, rater, code in readings:
        by_image[image_id][rater] = code
    multi = {i: r for i, r in by_image.items() if len(r) >= 2}
    seen_classes = sorted({c for r in multi.values() for c in r.values()})
    if classes is None:
        classes = seen_classes
    else:
        classes = [c for c in classes if c in seen_classes] + [c for c in seen_classes if c not in classes]
    report = AgreementReport(n_images=len(multi), classes=classes)
    report.n_readings = sum(len(r) for r in multi.values())
    report.raters = sorted({rater for r in multi.values() for rater in r})
    if not multi:
        return report

    # Cohen's kappa for every pair of experts on the images both read.
    for a, b in combinations(report.raters, 2):
        common = [(r[a], r[b]) for r in multi.values() if a in r and b in r]
        if not common:
            continue
        ya, yb = zip(*common)
        observed = sum(x == y for x, y in common) / len(common)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kappa = _finite(cohen_kappa_score(ya, yb)) if len(set(ya) | set(yb)) > 1 else None
        report.pairs.append(PairAgreement(a, b, len(common), observed, kappa))

    # Fleiss' kappa needs the same number of readers per image: the most common count.
    counts = Counter(len(r) for r in multi.values())
    n_raters = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    subjects = [list(r.values()) for r in multi.values() if len(r) == n_raters]
    index = {c: i for i, c in enumerate(classes)}
    coded = np.array([[index[c] for c in row] for row in subjects])
    table, _ = aggregate_raters(coded, n_cat=len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.fleiss_kappa = _finite(fleiss_kappa(table, method="fleiss")) if len(classes) > 1 else None
    report.fleiss_n_images, report.fleiss_n_raters = len(subjects), n_raters

    # Pairs of readings on the same image: observed agreement, specific agreement, confusion.
    left, right = [], []
    agree_pairs = total_pairs = 0
    for r in multi.values():
        for x, y in combinations(list(r.values()), 2):
            left += [x, y]
            right += [y, x]  # both orders: the matrix is symmetric
            total_pairs += 1
            agree_pairs += x == y
    report.observed = agree_pairs / total_pairs if total_pairs else None
    matrix = confusion_matrix(left, right, labels=classes)
    report.confusion = matrix.tolist()
    for i, code in enumerate(classes):
        row = int(matrix[i].sum())  # ordered pairs whose first reading is this class
        report.per_class.append(ClassAgreement(code, row, (int(matrix[i, i]) / row) if row else None))
    off = [
        (classes[i], classes[j], int(matrix[i, j]))
        for i in range(len(classes))
        for j in range(i + 1, len(classes))
        if matrix[i, j] > 0
    ]
    report.top_confusions = sorted(off, key=lambda t: -t[2])[:10]
    return report
