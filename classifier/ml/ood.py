"""How unlike the training cells an image is: the out-of-distribution (OOD) score.

Computed from the features the ensemble already extracts (no second network). Per backbone, the
cosine distance from the cell's features to its k-th nearest training cell (deep nearest
neighbours: Sun et al., "Out-of-distribution detection with deep nearest neighbors", ICML 2022);
the backbones are combined by the mean of their standardised distances. A network is often *more*
confident on images unlike its training set, so this is not the confidence: a cell from another
microscope or stain lies far from every training cell even when its softmax is sharp.

Fitting (at training time, on the cached features):

* the bank: the L2-normalised features of the training cells (the validation cells are kept out,
  so their distances are honest out-of-sample distances); beyond ``max_bank`` cells a
  class-stratified random subsample;
* each backbone's distances are standardised by the median and spread of the training cells'
  leave-one-out distances (every bank cell against the others: many samples);
* the threshold is the ``quantile`` of the validation cells' scores, so about
  ``100 - quantile`` % of in-domain cells are flagged; with fewer than
  :data:`MIN_VALIDATION` validation cells, the leave-one-out scores of the training cells set it
  (recorded as ``threshold_from``).

Projecting the features onto their principal components first does not work: foreign cells
differ from the training cells mostly *outside* the training cells' principal subspace, and the
projection throws exactly that away (AUROC 0.48 against 1.00 on pbc-dev against bccd-dev; see
docs/ml.md).

Pure numpy; the state is plain tensors and builtins so that checkpoints load with
``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

K = 5
QUANTILE = 97.5
MAX_BANK = 10_000
MIN_VALIDATION = 50
_CHUNK = 1024


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kth_distance(bank: np.ndarray, queries: np.ndarray, k: int, *, exclude_self: bool = False) -> np.ndarray:
    """Cosine distance of each (L2-normalised) query to its k-th nearest bank row. With
    ``exclude_self`` the queries are the bank itself and each row's own match is skipped."""
    bank = np.asarray(bank, dtype=np.float32)
    k_eff = min(k + (1 if exclude_self else 0), len(bank))
    out = np.empty(len(queries), np.float32)
    for s in range(0, len(queries), _CHUNK):
        sim = np.asarray(queries[s:s + _CHUNK], dtype=np.float32) @ bank.T
        # the k_eff-th largest similarity: the k-th nearest neighbour (self included when excluded)
        part = np.partition(sim, sim.shape[1] - k_eff, axis=1)[:, sim.shape[1] - k_eff]
        out[s:s + _CHUNK] = 1.0 - part
    return out


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


@dataclass
class OODModel:
    """The fitted score: banks, per-backbone standardisation, threshold."""

    backbones: list[str]
    banks: dict[str, np.ndarray]  # backbone -> [M, D] L2-normalised training features (float16 at rest)
    centre: dict[str, float]
    scale: dict[str, float]
    threshold: float
    k: int = K
    quantile: float = QUANTILE
    expected_rate: float = 0.0  # share of in-domain cells over the threshold where it was fitted
    threshold_from: str = "validation"
    n_bank: int = 0
    n_validation: int = 0
    _bank32: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def _bank(self, b: str) -> np.ndarray:
        if b not in self._bank32:
            self._bank32[b] = np.asarray(self.banks[b], dtype=np.float32)
        return self._bank32[b]

    def distances(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per backbone, the k-th nearest-neighbour cosine distance of each cell."""
        return {b: kth_distance(self._bank(b), l2_normalise(features[b]), self.k) for b in self.backbones}

    def combine(self, distances: dict[str, np.ndarray]) -> np.ndarray:
        return np.mean([(distances[b] - self.centre[b]) / self.scale[b] for b in self.backbones], axis=0)

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """[N] the OOD score of each cell (higher: less like the training cells). ``features``:
        backbone -> [N, D] features as the heads see them (before standardisation)."""
        return self.combine(self.distances(features))

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    # -- checkpoint -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "method": "knn_cosine",
            "backbones": list(self.backbones),
            "banks": {b: torch.from_numpy(np.ascontiguousarray(self.banks[b], dtype=np.float16)) for b in self.backbones},
            "centre": {b: float(v) for b, v in self.centre.items()},
            "scale": {b: float(v) for b, v in self.scale.items()},
            "threshold": float(self.threshold),
            "k": int(self.k),
            "quantile": float(self.quantile),
            "expected_rate": float(self.expected_rate),
            "threshold_from": self.threshold_from,
            "n_bank": int(self.n_bank),
            "n_validation": int(self.n_validation),
        }

    @classmethod
    def from_state(cls, state: dict) -> "OODModel":
        if state.get("method") != "knn_cosine":
            raise ValueError(f"unknown out-of-distribution method {state.get('method')!r}")
        return cls(
            backbones=list(state["backbones"]),
            banks={b: t.numpy() for b, t in state["banks"].items()},
            centre=dict(state["centre"]), scale=dict(state["scale"]), threshold=float(state["threshold"]),
            k=int(state["k"]), quantile=float(state["quantile"]), expected_rate=float(state["expected_rate"]),
            threshold_from=state["threshold_from"], n_bank=int(state["n_bank"]),
            n_validation=int(state["n_validation"]),
        )

    def summary(self) -> dict:
        """What a report shows (no arrays)."""
        return {k: v for k, v in self.state_dict().items() if k != "banks"}


def fit_ood(
    train_features: dict[str, np.ndarray],
    val_features: dict[str, np.ndarray],
    *,
    train_labels: np.ndarray | None = None,
    k: int = K,
    quantile: float = QUANTILE,
    max_bank: int = MAX_BANK,
    seed: int = 0,
) -> OODModel:
    """Fit the score on the training cells' features (backbone -> [N, D]) and set its threshold
    on the validation cells' (backbone -> [M, D], M may be 0)."""
    backbones = list(train_features)
    n = len(next(iter(train_features.values())))
    if n < 2:
        raise ValueError("the out-of-distribution score needs at least two training cells")
    keep = _subsample(n, train_labels, max_bank, seed)
    k = max(1, min(k, len(keep) - 1))
    banks, centre, scale, loo = {}, {}, {}, {}
    for b in backbones:
        bank = l2_normalise(np.asarray(train_features[b])[keep])
        banks[b] = bank
        d = kth_distance(bank, bank, k, exclude_self=True)
        centre[b] = float(np.median(d))
        q25, q75 = np.percentile(d, [25, 75])
        scale[b] = float(max(q75 - q25, 1e-6))
        loo[b] = d
    model = OODModel(backbones=backbones, banks=banks, centre=centre, scale=scale, threshold=0.0, k=k,
                     quantile=quantile, n_bank=len(keep))
    m = len(next(iter(val_features.values()))) if val_features else 0
    if m >= MIN_VALIDATION:
        ref, model.threshold_from = model.score(val_features), "validation"
    else:
        ref, model.threshold_from = model.combine(loo), "training (leave-one-out)"
    model.threshold = float(np.percentile(ref, quantile))
    model.expected_rate = float(np.mean(ref > model.threshold))
    model.n_validation = int(m)
    return model
