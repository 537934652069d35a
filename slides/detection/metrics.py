"""Box matching and detection metrics (pure numpy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix0, iy0 = max(a[0], b[0]), max(a[1], b[1])
    ix1, iy1 = min(a[2], b[2]), min(a[3], b[3])
    iw, ih = max(0.0, ix1 - ix0), max(0.0, iy1 - iy0)
    inter = iw * ih
    ua = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def match(pred_boxes, pred_scores, gt_boxes, thr: float = 0.5):
    """Greedy one-to-one matching by decreasing score.

    Returns (matches, unmatched_pred, unmatched_gt) with matches a list of
    (pred_index, gt_index, iou).
    """
    order = sorted(range(len(pred_boxes)), key=lambda i: -pred_scores[i])
    used: set[int] = set()
    matches, fp = [], []
    for i in order:
        best, best_j = thr, -1
        for j, g in enumerate(gt_boxes):
            if j in used:
                continue
            v = iou(pred_boxes[i], g)
            if v >= best:
                best, best_j = v, j
        if best_j >= 0:
            used.add(best_j)
            matches.append((i, best_j, best))
        else:
            fp.append(i)
    fn = [j for j in range(len(gt_boxes)) if j not in used]
    return matches, fp, fn


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, tp, fp, fn):
        self.tp += tp
        self.fp += fp
        self.fn += fn

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0
