"""How unlike the training cells an image is: the out-of-distribution (OOD) score.

Computed from the features the ensemble already extracts (no second network), from the cell's
k nearest training cells in each backbone's L2-normalised features:

* **distance**: the cosine distance to the k-th nearest training cell (deep nearest neighbours:
  Sun et al., "Out-of-distribution detection with deep nearest neighbors", ICML 2022);
* **relative distance**: that distance divided by the same distance of those neighbours among
  the training cells (the local outlier factor's idea: Breunig et al., 2000) — how far the cell
  is from its neighbours compared with how far they are from theirs.

Each is standardised per backbone (median and interquartile range over the training cells, each
leave-one-out) and averaged over the backbones; the score is the *smaller* of the two. A cell is
flagged only when it is both far from every training cell and far for its neighbourhood:

* a cell from another microscope or stain is far in both senses (a network is often *more*
  confident on such images, so this is not the confidence);
* once a lab's verified cells from its own microscope are in the training set, new cells like
  them are near those cells, which lie as far from each other as such cells do: the relative
  distance is ordinary and the cell is accepted — the model adapts to the lab (with the
  distance alone, 60-77 % of bccd-dev cells stayed flagged after 5-40 verified cells per class
  were added; with both, 1-3 %);
* an in-domain cell that is merely atypical (a sparse region of the training cells) is far in
  absolute terms but not for its neighbourhood, and is not flagged.

A cell accepted only thanks to a few similar training cells — far from most of them (its distance
over the distance's own threshold, set like the score's) — is trusted only where those neighbours'
classes back the vote (at least :data:`NEIGHBOUR_AGREEMENT` of them, over the backbones): a lab's
first few verified cells teach the model where its cells lie before they teach it to classify them
(on bccd-dev with 10 verified cells per class, this rule took the foreign cells accepted with a
wrong class from 5.4 % to 0 %, and changed nothing on in-domain cells).

**Class support.** A cell near a handful of training cells of its voted class — a lab's first few
verified cells from a new microscope, with no other cell of that class nearby — is not enough to
accept the vote: the neighbours' rule above only asks whether those few agree. So the check also
measures, for every class, the distance to the cell's :data:`SUPPORT_M`-th nearest training cell
*of that class* (and that distance relative to those cells' own, as above), standardised per class
on the training cells' leave-one-out values. A cell whose voted class is over the support threshold
(the :data:`SUPPORT_QUANTILE` percentile of the validation cells at their own class) is referred:
"few training images of this class like it". It needs no source: with fewer than ``SUPPORT_M``
cells of the class from the same microscope, the ``SUPPORT_M``-th neighbour is a cell of the home
microscope, far away; once the lab has verified that many, it is one of its own cells and the
relative distance is ordinary. This is the portal's per-source rule (``classifier.new_sources``)
for images with no source: a folder classified by ``classify`` after ``train_ensemble --data``.

Fitting (at training time, on the cached features): the bank is the training cells (the
validation cells are kept out, so their scores are honest out-of-sample scores); beyond
``max_bank`` cells a class-stratified random subsample. The threshold is the ``quantile`` of the
validation cells' scores, so about ``100 - quantile`` % of in-domain cells are flagged; with fewer
than :data:`MIN_VALIDATION` validation cells, the leave-one-out scores of the training cells set
it (recorded as ``threshold_from``).

**Colour.** Deep features are trained to ignore much of colour, and a stain, a lamp or a camera
moves exactly that: a cell whose stain's hue turned by 30 degrees was flagged only 39 % of the
time by the features' score while the heads got 58 % of those cells right, and 8.7 % of all such
cells were accepted with a wrong class. So the check has a second score of the same kind on 40
colour statistics of the image (:func:`colour_features`), and a cell is flagged when either
score is over its threshold (:class:`OODCheck`); the two thresholds are set together so that about
``100 - quantile`` % of the validation cells are flagged.

**A batch unlike the training images.** A blur or a 25 % larger camera scale moves every cell a
little, too little for most single cells to pass a threshold (2.6 % and 8.1 % of such pbc-dev cells
were flagged, against 1 % at home) while the model got more of them wrong (6.5 % of all cells
accepted and wrong at ×1.25). What moves is the whole batch: where a cell's score ranks among the
validation cells of its voted class (0 to 1, about 0.5 on average at home; with fewer than
:data:`MIN_VALIDATION` validation cells, among the training cells' leave-one-out scores) a blurred batch ranks
0.73 on average, a ×1.25 one 0.80. So a batch of one source (a slide, an upload, one ``classify``
call) of at least :data:`BATCH_MIN` cells whose mean rank is over :func:`batch_threshold` (a
one-sided test at about 1 in 1,000 against a mean of :data:`BATCH_MARGIN`, which leaves room for a
home batch of one class only: 0.42-0.58 measured) is unlike the training images as a whole. The
calibration was fitted at home, so in such a batch the confidence is trusted only near its top: a
call is accepted only at :data:`BATCH_CONFIDENCE` or more (or the lab's threshold, where higher);
every other cell of the batch is referred (``batch_unlike``). Referring the whole batch instead
cost every cell of a magnified or second-stain source even after 20 verified cells per class (their
cells still score above home's, also against their nearest training cells' own scores); at 0.9,
the calls accepted from such batches were wrong on at most 1.4 % of their cells, against 2.7-6.5 %
with no batch rule (docs/ml.md, "Class support and batches unlike the training images").

Projecting the features onto their principal components first does not work: foreign cells
differ from the training cells mostly *outside* the training cells' principal subspace, and the
projection throws exactly that away (AUROC 0.41-0.48 against 1.00 on pbc-dev against bccd-dev;
see docs/ml.md).

Pure numpy; the state is plain tensors and builtins so that checkpoints load with
``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

K = 5
QUANTILE = 97.5
NEIGHBOUR_AGREEMENT = 0.6
MAX_BANK = 10_000
MIN_VALIDATION = 50
# class support: the rank of the same-class neighbour read, and the share of validation cells
# (at their own class) under the threshold
SUPPORT_M = 10
SUPPORT_QUANTILE = 99.0
# a batch unlike the training images: at least this many cells; its mean rank against the
# validation cells of the voted class tested against this mean, at this z (one-sided, ~1/1,000)
BATCH_MIN = 30
BATCH_MARGIN = 0.6
BATCH_Z = 3.09
# in such a batch a call is accepted only at this confidence or more (the lab's threshold where higher)
BATCH_CONFIDENCE = 0.9
_CHUNK = 1024


def batch_threshold(n: int) -> float:
    """The mean rank over which a batch of ``n`` cells is unlike the training images: a rank is
    uniform on (0, 1) at home (variance 1/12), so its mean over ``n`` cells is tested one-sided
    against :data:`BATCH_MARGIN` at :data:`BATCH_Z`."""
    return BATCH_MARGIN + BATCH_Z * float(np.sqrt(1.0 / (12.0 * max(n, 1))))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(bank: np.ndarray, queries: np.ndarray, k: int, *, exclude_self: bool = False,
            metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest bank rows of each query: (distance to the k-th [N], their indices [N, k]).
    ``metric``: "cosine" (bank and queries L2-normalised) or "euclidean". With ``exclude_self``
    the queries are the bank itself and each row's own match is skipped."""
    bank = np.asarray(bank, dtype=np.float32)
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be cosine or euclidean, not {metric!r}")
    bank_sq = (bank * bank).sum(1) if metric == "euclidean" else None
    k = min(k, len(bank) - (1 if exclude_self else 0))
    take = k + (1 if exclude_self else 0)
    dist = np.empty(len(queries), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), _CHUNK):
        q = np.asarray(queries[s:s + _CHUNK], dtype=np.float32)
        sim = q @ bank.T
        if metric == "euclidean":  # the negated squared distance: larger is nearer, as with cosine
            sim = 2 * sim - bank_sq[None, :] - (q * q).sum(1)[:, None]
        if exclude_self:
            rows = np.arange(sim.shape[0])
            sim[rows, s + rows] = -np.inf
        top = np.argpartition(-sim, take - 1, axis=1)[:, :take] if take < sim.shape[1] else np.tile(
            np.arange(sim.shape[1]), (sim.shape[0], 1))
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1)[:, :k]
        idx[s:s + _CHUNK] = np.take_along_axis(top, order, axis=1)
        kth = np.take_along_axis(top_sim, order[:, -1:], axis=1)[:, 0]
        dist[s:s + _CHUNK] = 1.0 - kth if metric == "cosine" else np.sqrt(np.maximum(-kth, 0.0))
    return dist, idx


def kth_distance(bank: np.ndarray, queries: np.ndarray, k: int, *, exclude_self: bool = False,
                 metric: str = "cosine") -> np.ndarray:
    """Distance of each query to its k-th nearest bank row (see :func:`nearest`)."""
    return nearest(bank, queries, k, exclude_self=exclude_self, metric=metric)[0]


def _subsample(n: int, labels: np.ndarray | None, max_bank: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_bank`` rows, every class keeping its share (at least one row)."""
    if n <= max_bank:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, max_bank, replace=False))
    labels = np.asarray(labels)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = max(1, int(round(max_bank * len(idx) / n)))
        keep.append(rng.choice(idx, min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def _robust(values: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range (the scale never 0)."""
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float(max(q75 - q25, 1e-6))


@dataclass
class Assessment:
    """What the score reads from one batch of cells."""

    score: np.ndarray  # [N] the OOD score: the smaller of the two measures
    distance: np.ndarray  # [N] the standardised distance
    relative: np.ndarray  # [N] the standardised relative distance
    neighbour_labels: np.ndarray  # [N, backbones, k] the classes (indices) of the nearest training cells
    # [N, C] per class, how thinly the training cells of that class support the cell (standardised,
    # the smaller of distance and relative distance to the SUPPORT_M-th of them); None: not fitted
    support: np.ndarray | None = None


@dataclass
class OODModel:
    """The fitted score: banks with their leave-one-out distances, per-backbone
    standardisation of both measures, threshold."""

    backbones: list[str]
    banks: dict[str, np.ndarray]  # backbone -> [M, D] training features (L2-normalised for cosine)
    loo: dict[str, np.ndarray]  # backbone -> [M] each bank cell's k-th neighbour distance among the others
    distance: dict[str, tuple[float, float]]  # backbone -> (median, IQR) of the leave-one-out distances
    relative: dict[str, tuple[float, float]]  # backbone -> (median, IQR) of the leave-one-out relative distances
    threshold: float
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [M] class index of each bank cell
    far_threshold: float = float("inf")  # the distance over which a cell is far from most training cells
    metric: str = "cosine"  # deep features: cosine on L2-normalised vectors; colour statistics: euclidean
    k: int = K
    quantile: float = QUANTILE
    expected_rate: float = 0.0  # share of in-domain cells over the threshold where it was fitted
    threshold_from: str = "validation"
    n_bank: int = 0
    n_validation: int = 0
    # class support (0: not fitted, e.g. a checkpoint written before it or the colour statistics)
    support_m: int = 0
    support_loo: dict[str, np.ndarray] = field(default_factory=dict)  # backbone -> [M] the same-class leave-one-out distance
    support_distance: dict[str, np.ndarray] = field(default_factory=dict)  # backbone -> [C, 2] (median, IQR) per class
    support_relative: dict[str, np.ndarray] = field(default_factory=dict)  # backbone -> [C, 2]
    support_threshold: float = float("inf")
    # float32 banks, and per class ("backbone\0class") the rows and their same-class leave-one-out distances
    _bank32: dict = field(default_factory=dict, repr=False, compare=False)
    _reference: np.ndarray | None = field(default=None, repr=False, compare=False)  # the scores the threshold was set on

    def _bank(self, b: str) -> np.ndarray:
        if b not in self._bank32:
            self._bank32[b] = np.asarray(self.banks[b], dtype=np.float32)
        return self._bank32[b]

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return l2_normalise(x) if self.metric == "cosine" else np.asarray(x, np.float32)

    def assess(self, features: dict[str, np.ndarray]) -> Assessment:
        """The score of each cell, its standardised distance, and its neighbours' classes.
        ``features``: backbone -> [N, D] features as the heads see them (before standardisation)."""
        dz, rz, labels = [], [], []
        for b in self.backbones:
            d, idx = nearest(self._bank(b), self._prepare(features[b]), self.k, metric=self.metric)
            r = d / np.maximum(np.asarray(self.loo[b], np.float32)[idx].mean(1), 1e-6)
            dz.append((d - self.distance[b][0]) / self.distance[b][1])
            rz.append((r - self.relative[b][0]) / self.relative[b][1])
            labels.append(np.asarray(self.labels)[idx] if len(self.labels) else np.full(idx.shape, -1))
        distance, relative = np.mean(dz, axis=0), np.mean(rz, axis=0)
        return Assessment(score=np.minimum(distance, relative), distance=distance, relative=relative,
                          neighbour_labels=np.stack(labels, axis=1),
                          support=self._support(features) if self.support_m else None)

    @property
    def n_classes(self) -> int:
        return len(next(iter(self.support_distance.values()))) if self.support_distance else 0

    def _class_bank(self, b: str, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Backbone ``b``'s bank rows of class ``c`` and their same-class leave-one-out distances
        (kept: every classified batch reads them)."""
        key = f"{b}\0{c}"
        if key not in self._bank32:
            members = np.flatnonzero(np.asarray(self.labels) == c)
            self._bank32[key] = (self._bank(b)[members], np.asarray(self.support_loo[b], np.float32)[members])
        return self._bank32[key]

    def _support(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """[N, C] class support of each cell for every class (see the module's notes)."""
        dz = np.full((len(self.backbones), len(next(iter(features.values()))), self.n_classes), np.inf, np.float32)
        rz = dz.copy()
        for i, b in enumerate(self.backbones):
            q = self._prepare(features[b])
            for c in range(self.n_classes):
                bank, loo = self._class_bank(b, c)
                if len(bank) < 2:  # no support to read: the cell is not supported by this class
                    continue
                m = min(self.support_m, len(bank) - 1)
                d, idx = nearest(bank, q, m, metric=self.metric)
                r = d / np.maximum(loo[idx].mean(1), 1e-6)
                (dmed, diqr), (rmed, riqr) = self.support_distance[b][c], self.support_relative[b][c]
                dz[i, :, c] = (d - dmed) / diqr
                rz[i, :, c] = (r - rmed) / riqr
        return np.minimum(dz.mean(0), rz.mean(0))

    def thinly_supported(self, assessment: Assessment, voted: np.ndarray) -> np.ndarray:
        """[N] True where the voted class's training cells support the cell too thinly (fewer than
        about :data:`SUPPORT_M` of them like it)."""
        if assessment.support is None or not np.isfinite(self.support_threshold):
            return np.zeros(len(voted), dtype=bool)
        return assessment.support[np.arange(len(voted)), np.asarray(voted)] > self.support_threshold

    def measures(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The two standardised measures of each cell, averaged over the backbones: (distance,
        relative distance), each [N]."""
        a = self.assess(features)
        return a.distance, a.relative

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """[N] the OOD score of each cell (higher: less like the training cells)."""
        return self.assess(features).score

    def neighbours_disagree(self, assessment: Assessment, voted: np.ndarray) -> np.ndarray:
        """[N] True where a cell far from most training cells has near neighbours whose classes do
        not back the voted class (fewer than :data:`NEIGHBOUR_AGREEMENT` of them)."""
        far = assessment.distance > self.far_threshold
        share = (assessment.neighbour_labels == np.asarray(voted)[:, None, None]).mean(axis=(1, 2))
        return far & (share < NEIGHBOUR_AGREEMENT)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    # -- checkpoint -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "method": "knn_relative",
            "metric": self.metric,
            "backbones": list(self.backbones),
            # unit vectors keep in half precision; raw statistics (a few dozen per cell) in single
            "banks": {b: torch.from_numpy(np.ascontiguousarray(
                self.banks[b], dtype=np.float16 if self.metric == "cosine" else np.float32)) for b in self.backbones},
            "loo": {b: torch.from_numpy(np.ascontiguousarray(self.loo[b], dtype=np.float32)) for b in self.backbones},
            "distance": {b: [float(v) for v in self.distance[b]] for b in self.backbones},
            "relative": {b: [float(v) for v in self.relative[b]] for b in self.backbones},
            "threshold": float(self.threshold),
            "labels": torch.from_numpy(np.ascontiguousarray(self.labels, dtype=np.int64)),
            "far_threshold": float(self.far_threshold),
            "k": int(self.k),
            "quantile": float(self.quantile),
            "expected_rate": float(self.expected_rate),
            "threshold_from": self.threshold_from,
            "n_bank": int(self.n_bank),
            "n_validation": int(self.n_validation),
            "support_m": int(self.support_m),
            "support_loo": {b: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for b, v in self.support_loo.items()},
            "support_distance": {b: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                                 for b, v in self.support_distance.items()},
            "support_relative": {b: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                                 for b, v in self.support_relative.items()},
            "support_threshold": float(self.support_threshold),
        }

    @classmethod
    def from_state(cls, state: dict) -> "OODModel":
        if state.get("method") != "knn_relative":
            raise ValueError(f"unknown out-of-distribution method {state.get('method')!r}")
        return cls(
            backbones=list(state["backbones"]),
            banks={b: t.numpy() for b, t in state["banks"].items()},
            loo={b: t.numpy() for b, t in state["loo"].items()},
            distance={b: tuple(v) for b, v in state["distance"].items()},
            relative={b: tuple(v) for b, v in state["relative"].items()},
            threshold=float(state["threshold"]), labels=state["labels"].numpy(),
            far_threshold=float(state["far_threshold"]), metric=state["metric"], k=int(state["k"]),
            quantile=float(state["quantile"]),
            expected_rate=float(state["expected_rate"]), threshold_from=state["threshold_from"],
            n_bank=int(state["n_bank"]), n_validation=int(state["n_validation"]),
            # a checkpoint written before class support: the rule stays off
            support_m=int(state.get("support_m", 0)),
            support_loo={b: t.numpy() for b, t in state.get("support_loo", {}).items()},
            support_distance={b: t.numpy() for b, t in state.get("support_distance", {}).items()},
            support_relative={b: t.numpy() for b, t in state.get("support_relative", {}).items()},
            support_threshold=float(state.get("support_threshold", float("inf"))),
        )

    def summary(self) -> dict:
        """What a report shows (no arrays)."""
        return {k: v for k, v in self.state_dict().items()
                if k not in ("banks", "loo", "labels", "support_loo", "support_distance", "support_relative")}


class _FittedBank(NamedTuple):
    bank: np.ndarray  # [M, D] the training cells' features (unit vectors in half precision for cosine)
    loo: np.ndarray  # [M] each cell's k-th neighbour distance among the others
    distance: tuple[float, float]  # (median, IQR) of those distances
    relative: tuple[float, float]  # (median, IQR) of the relative distances
    loo_dz: np.ndarray  # [M] the standardised leave-one-out distances
    loo_rz: np.ndarray  # [M] the standardised leave-one-out relative distances


def _fit_bank(raw: np.ndarray, k: int, metric: str) -> _FittedBank:
    """One backbone's bank of training features [M, D], its leave-one-out distances and their
    standardisation."""
    # stored in half precision (cosine): fitted on exactly what a checkpoint gives back
    bank = (l2_normalise(raw).astype(np.float16).astype(np.float32) if metric == "cosine"
            else np.asarray(raw, np.float32))
    d, idx = nearest(bank, bank, k, exclude_self=True, metric=metric)
    r = d / np.maximum(d[idx].mean(1), 1e-6)
    distance, relative = _robust(d), _robust(r)
    return _FittedBank(bank=bank, loo=d, distance=distance, relative=relative,
                       loo_dz=(d - distance[0]) / distance[1], loo_rz=(r - relative[0]) / relative[1])


def fit_ood(
    train_features: dict[str, np.ndarray],
    val_features: dict[str, np.ndarray],
    *,
    train_labels: np.ndarray | None = None,
    k: int = K,
    quantile: float = QUANTILE,
    max_bank: int = MAX_BANK,
    seed: int = 0,
    metric: str = "cosine",
    val_labels: np.ndarray | None = None,
    n_classes: int | None = None,
    support_m: int = 0,
    support_quantile: float = SUPPORT_QUANTILE,
) -> OODModel:
    """Fit the score on the training cells' features (backbone -> [N, D]) and set its threshold
    on the validation cells' (backbone -> [M, D], M may be 0). With ``support_m`` (and the
    training labels), the class support too, its threshold on the validation cells at their own
    class (``val_labels``)."""
    backbones = list(train_features)
    n = len(next(iter(train_features.values())))
    if n < 3:
        raise ValueError("the out-of-distribution score needs at least three training cells")
    keep = _subsample(n, train_labels, max_bank, seed)
    k = max(1, min(k, len(keep) - 2))
    fitted = {b: _fit_bank(np.asarray(train_features[b])[keep], k, metric) for b in backbones}
    labels = (np.asarray(train_labels, dtype=np.int64)[keep] if train_labels is not None
              else np.full(len(keep), -1, np.int64))
    model = OODModel(backbones=backbones, banks={b: f.bank for b, f in fitted.items()},
                     loo={b: f.loo for b, f in fitted.items()}, distance={b: f.distance for b, f in fitted.items()},
                     relative={b: f.relative for b, f in fitted.items()}, threshold=0.0, labels=labels, metric=metric,
                     k=k, quantile=quantile, n_bank=len(keep))
    m = len(next(iter(val_features.values()))) if val_features else 0
    if m >= MIN_VALIDATION:
        a = model.assess(val_features)
        ref, ref_distance, model.threshold_from = a.score, a.distance, "validation"
    else:
        ref_distance = np.mean([f.loo_dz for f in fitted.values()], axis=0)
        ref = np.minimum(ref_distance, np.mean([f.loo_rz for f in fitted.values()], axis=0))
        model.threshold_from = "training (leave-one-out)"
    model.threshold = float(np.percentile(ref, quantile))
    model.far_threshold = float(np.percentile(ref_distance, quantile))
    model.expected_rate = float(np.mean(ref > model.threshold))
    model.n_validation = int(m)
    model._reference = ref
    if support_m and train_labels is not None:
        _fit_support(model, support_m, support_quantile, val_features if m else {}, val_labels,
                     n_classes or int(labels.max()) + 1)
    return model


def _fit_support(model: OODModel, support_m: int, quantile: float, val_features: dict[str, np.ndarray],
                 val_labels: np.ndarray | None, n_classes: int) -> None:
    """Each bank cell's leave-one-out distance to its ``support_m``-th nearest cell of its own
    class (and relative to those cells' own), standardised per class; the threshold on the
    validation cells at their own class, else on the bank's leave-one-out values."""
    labels = np.asarray(model.labels)
    model.support_m = int(support_m)
    loo_z = np.full((len(model.backbones), len(labels)), np.inf, np.float32)
    loo_r = loo_z.copy()
    for i, b in enumerate(model.backbones):
        bank = model._bank(b)
        loo = np.zeros(len(labels), np.float32)
        dist, rel = np.zeros((n_classes, 2), np.float32), np.zeros((n_classes, 2), np.float32)
        dist[:, 1] = rel[:, 1] = 1.0
        per_class = {}
        for c in range(n_classes):
            members = np.flatnonzero(labels == c)
            if len(members) < 2:
                continue
            d, idx = nearest(bank[members], bank[members], min(support_m, len(members) - 1), exclude_self=True,
                             metric=model.metric)
            loo[members] = d
            per_class[c] = (members, d, idx)
        for c, (members, d, idx) in per_class.items():
            r = d / np.maximum(loo[members][idx].mean(1), 1e-6)
            dist[c], rel[c] = _robust(d), _robust(r)
            loo_z[i, members] = (d - dist[c, 0]) / dist[c, 1]
            loo_r[i, members] = (r - rel[c, 0]) / rel[c, 1]
        model.support_loo[b], model.support_distance[b], model.support_relative[b] = loo, dist, rel
    n_val = len(next(iter(val_features.values()))) if val_features else 0
    if n_val >= MIN_VALIDATION and val_labels is not None:
        support = model._support(val_features)
        ref = support[np.arange(n_val), np.asarray(val_labels, np.int64)]
    else:
        ref = np.minimum(loo_z.mean(0), loo_r.mean(0))
    ref = ref[np.isfinite(ref)]
    model.support_threshold = float(np.percentile(ref, quantile)) if len(ref) else float("inf")


# --- Colour: the stain and the camera ------------------------------------------------------
COLOUR_SIZE = 96  # colour statistics are read on the whole image resized to this (same at training)
_PERCENTILES = (5, 25, 50, 75, 95)


def colour_features(images) -> np.ndarray:
    """uint8 images [B, 3, S, S] -> [B, 40] colour statistics: per channel (red, green, blue,
    saturation, value) the mean, the spread and five percentiles; the saturation-weighted mean
    hue (cosine, sine: the stain's colour); and the mean colour of the darkest tenth of the pixels
    (the nucleus). Deep features are trained to ignore much of colour; a stain, a lamp or a camera
    moves exactly these."""
    x = np.asarray(images.numpy() if hasattr(images, "numpy") else images, dtype=np.float32) / 255.0
    b = x.shape[0]
    rgb = x.reshape(b, 3, -1)
    v = rgb.max(1)
    c = v - rgb.min(1)
    sat = np.where(v > 0, c / np.maximum(v, 1e-6), 0.0)
    r, g, bl = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.maximum(c, 1e-6)
    hue = np.where(v == r, ((g - bl) / safe) % 6, np.where(v == g, (bl - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(c > 0, hue * (np.pi / 3), 0.0)
    out = []
    for ch in (r, g, bl, sat, v):
        out += [ch.mean(1), ch.std(1)] + list(np.percentile(ch, _PERCENTILES, axis=1))
    out += [(np.cos(hue) * sat).mean(1), (np.sin(hue) * sat).mean(1)]
    lum = rgb.mean(1)
    dark = lum <= np.percentile(lum, 10, axis=1, keepdims=True)
    counts = np.maximum(dark.sum(1), 1)
    out += [(rgb[:, i] * dark).sum(1) / counts for i in range(3)]
    return np.stack(out, axis=1).astype(np.float32)


@dataclass
class OODCheck:
    """The out-of-distribution check the engine runs: the deep features' score and the colour
    statistics' score (each an :class:`OODModel`), each with a threshold set so that together
    they flag about ``100 - quantile`` % of the validation cells. The stored score is the larger
    of the two excesses over their thresholds: over 0 means flagged."""

    features: OODModel
    colour: OODModel
    colour_mean: np.ndarray
    colour_std: np.ndarray
    features_threshold: float
    colour_threshold: float
    quantile: float = QUANTILE
    expected_rate: float = 0.0
    threshold_from: str = "validation"
    threshold: float = 0.0  # on the combined score
    # the combined scores and classes of the cells the thresholds were set on (validation, else the
    # bank's leave-one-out scores): what a batch's cells are ranked against (None: a checkpoint
    # written before the batch check)
    reference_scores: np.ndarray | None = None
    reference_labels: np.ndarray | None = None

    @property
    def backbones(self) -> list[str]:
        return self.features.backbones

    @property
    def k(self) -> int:
        return self.features.k

    @property
    def far_threshold(self) -> float:
        return self.features.far_threshold

    def _colour(self, colour: np.ndarray) -> dict[str, np.ndarray]:
        return {"colour": (np.asarray(colour, np.float32) - self.colour_mean) / self.colour_std}

    def assess(self, features: dict[str, np.ndarray], colour: np.ndarray) -> Assessment:
        """``features``: backbone -> [N, D]; ``colour``: [N, 40] from :func:`colour_features`."""
        a = self.features.assess(features)
        c = self.colour.score(self._colour(colour))
        a.score = np.maximum(a.score - self.features_threshold, c - self.colour_threshold)
        return a

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def neighbours_disagree(self, assessment: Assessment, voted: np.ndarray) -> np.ndarray:
        return self.features.neighbours_disagree(assessment, voted)

    def thinly_supported(self, assessment: Assessment, voted: np.ndarray) -> np.ndarray:
        return self.features.thinly_supported(assessment, voted)

    def ranks(self, scores: np.ndarray, voted: np.ndarray) -> np.ndarray:
        """[N] where each cell's score ranks among the validation cells of its voted class (all
        of them where that class has fewer than 5), from 0 to 1 (mid-rank)."""
        ref, ref_labels = np.asarray(self.reference_scores), np.asarray(self.reference_labels)
        scores, voted = np.asarray(scores, np.float64), np.asarray(voted)
        out = np.empty(len(scores))
        for c in np.unique(voted):
            r = np.sort(ref[ref_labels == c])
            if len(r) < 5:
                r = np.sort(ref)
            at = voted == c
            below = np.searchsorted(r, scores[at], side="left")
            ties = np.searchsorted(r, scores[at], side="right") - below
            out[at] = (below + 0.5 * ties + 0.5) / (len(r) + 1)
        return out

    def batch_unlike(self, scores: np.ndarray, voted: np.ndarray) -> tuple[float, float] | None:
        """(mean rank, threshold) of one source's batch (see the module's notes); None where the
        batch is smaller than :data:`BATCH_MIN` or the check has no reference."""
        if self.reference_scores is None or len(scores) < BATCH_MIN:
            return None
        return float(self.ranks(scores, voted).mean()), batch_threshold(len(scores))

    @property
    def support_threshold(self) -> float:
        return self.features.support_threshold

    def state_dict(self) -> dict:
        return {
            "method": "features+colour",
            "features": self.features.state_dict(),
            "colour": self.colour.state_dict(),
            "colour_mean": torch.from_numpy(np.ascontiguousarray(self.colour_mean, np.float32)),
            "colour_std": torch.from_numpy(np.ascontiguousarray(self.colour_std, np.float32)),
            "features_threshold": float(self.features_threshold),
            "colour_threshold": float(self.colour_threshold),
            "quantile": float(self.quantile),
            "expected_rate": float(self.expected_rate),
            "threshold_from": self.threshold_from,
            **({} if self.reference_scores is None else {
                "reference_scores": torch.from_numpy(np.ascontiguousarray(self.reference_scores, np.float32)),
                "reference_labels": torch.from_numpy(np.ascontiguousarray(self.reference_labels, np.int64))}),
        }

    @classmethod
    def from_state(cls, state: dict) -> "OODCheck":
        if state.get("method") != "features+colour":
            raise ValueError(f"unknown out-of-distribution method {state.get('method')!r}")
        return cls(features=OODModel.from_state(state["features"]), colour=OODModel.from_state(state["colour"]),
                   colour_mean=state["colour_mean"].numpy(), colour_std=state["colour_std"].numpy(),
                   features_threshold=float(state["features_threshold"]),
                   colour_threshold=float(state["colour_threshold"]), quantile=float(state["quantile"]),
                   expected_rate=float(state["expected_rate"]), threshold_from=state["threshold_from"],
                   reference_scores=state["reference_scores"].numpy() if "reference_scores" in state else None,
                   reference_labels=state["reference_labels"].numpy() if "reference_labels" in state else None)

    def summary(self) -> dict:
        """What a report shows (no arrays)."""
        return {
            "method": "features+colour", "k": self.k, "quantile": self.quantile, "expected_rate": self.expected_rate,
            "threshold_from": self.threshold_from, "threshold": self.threshold,
            "features_threshold": self.features_threshold, "colour_threshold": self.colour_threshold,
            "far_threshold": self.far_threshold, "n_bank": self.features.n_bank,
            "support_m": self.features.support_m, "support_threshold": self.features.support_threshold,
            "batch_reference_cells": None if self.reference_scores is None else int(len(self.reference_scores)),
            "n_validation": self.features.n_validation,
        }


def fit_ood_check(train_features: dict[str, np.ndarray], val_features: dict[str, np.ndarray],
                  train_colour: np.ndarray, val_colour: np.ndarray, *, train_labels: np.ndarray | None = None,
                  k: int = K, quantile: float = QUANTILE, max_bank: int = MAX_BANK, seed: int = 0,
                  val_labels: np.ndarray | None = None, n_classes: int | None = None,
                  support_m: int = SUPPORT_M, support_quantile: float = SUPPORT_QUANTILE) -> OODCheck:
    """Fit both scores, then their thresholds together: the lowest common percentile of their
    reference scores (validation, else leave-one-out) at which the cells over either threshold
    are at most ``100 - quantile`` % of the reference cells."""
    mean = np.asarray(train_colour, np.float32).mean(0)
    std = np.asarray(train_colour, np.float32).std(0) + 1e-6
    features = fit_ood(train_features, val_features, train_labels=train_labels, k=k, quantile=quantile,
                       max_bank=max_bank, seed=seed, val_labels=val_labels, n_classes=n_classes,
                       support_m=support_m, support_quantile=support_quantile)
    colour = fit_ood({"colour": (np.asarray(train_colour, np.float32) - mean) / std},
                     {"colour": (np.asarray(val_colour, np.float32) - mean) / std} if len(val_colour) else {},
                     train_labels=train_labels, k=k, quantile=quantile, max_bank=max_bank, seed=seed,
                     metric="euclidean")
    rf, rc = features._reference, colour._reference
    if len(rf) != len(rc):  # one fell back to leave-one-out and the other did not: use each alone
        tf, tc = float(np.percentile(rf, quantile)), float(np.percentile(rc, quantile))
        rate = max(float(np.mean(rf > tf)), float(np.mean(rc > tc)))
    else:
        allowed = 1 - quantile / 100
        for q in np.arange(quantile, 100.0, 0.05):
            tf, tc = float(np.percentile(rf, q)), float(np.percentile(rc, q))
            rate = float(np.mean((rf > tf) | (rc > tc)))
            if rate <= allowed:
                break
    # what a batch's cells are ranked against: the cells the thresholds were set on (validation, else
    # the bank's leave-one-out scores), with their classes
    reference = reference_labels = None
    ref_labels = val_labels if features.threshold_from == "validation" else features.labels
    if len(rf) == len(rc) and ref_labels is not None and len(ref_labels) == len(rf):
        reference, reference_labels = np.maximum(rf - tf, rc - tc), np.asarray(ref_labels, np.int64)
    return OODCheck(features=features, colour=colour, colour_mean=mean, colour_std=std, features_threshold=tf,
                    colour_threshold=tc, quantile=quantile, expected_rate=rate, threshold_from=features.threshold_from,
                    reference_scores=reference, reference_labels=reference_labels)
