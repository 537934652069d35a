"""The classical baselines of Yu et al., Table I, on simple image features (no Django).

k-NN (k=3), SVM, logistic regression and a decision tree from scikit-learn, trained on the same
training snapshot as the CNN ensemble, on a colour histogram (8 bins per RGB channel, plus an
HSV hue histogram) and the image downsampled to 12x12 pixels.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

BASELINES = {
    "knn3": "k-NN (k=3)",
    "svm": "SVM (RBF kernel)",
    "logreg": "Logistic regression",
    "tree": "Decision tree",
}
THUMB = 12
BINS = 8


def image_features(path: Path | str) -> np.ndarray:
    """Colour histograms (RGB 3x8 bins + hue 8 bins, normalised) and 12x12 RGB pixels in 0..1."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        arr = np.asarray(rgb, dtype=np.uint8)
        hue = np.asarray(rgb.convert("HSV"), dtype=np.uint8)[..., 0]
        thumb = np.asarray(rgb.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    n = arr.shape[0] * arr.shape[1]
    hists = [np.histogram(arr[..., c], bins=BINS, range=(0, 256))[0] / n for c in range(3)]
    hists.append(np.histogram(hue, bins=BINS, range=(0, 256))[0] / n)
    return np.concatenate([np.concatenate(hists).astype(np.float32), thumb.reshape(-1)])


def features_for(paths: Sequence[Path | str], cache: dict | None = None, keys: Sequence[str] | None = None) -> np.ndarray:
    """Features of many images; ``cache`` (key -> vector) avoids decoding an image twice."""
    rows = []
    for i, p in enumerate(paths):
        key = keys[i] if keys is not None else str(p)
        if cache is not None and key in cache:
            rows.append(cache[key])
            continue
        v = image_features(p)
        if cache is not None:
            cache[key] = v
        rows.append(v)
    return np.stack(rows) if rows else np.zeros((0, 4 * BINS + 3 * THUMB * THUMB), np.float32)


def make_classifier(name: str, seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    if name == "knn3":
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3))
    if name == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale", random_state=seed))
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    if name == "tree":
        return DecisionTreeClassifier(random_state=seed)
    raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")


def fit_predict(
    X_train: np.ndarray, y_train: Sequence[str], X_test: np.ndarray, *, names: Sequence[str] = tuple(BASELINES),
    seed: int = 0, on_step: Callable[[str], None] | None = None,
) -> dict[str, list[str]]:
    """Train each baseline on (X_train, y_train) and predict X_test: name -> predicted class codes."""
    y_train = np.asarray(list(y_train))
    if len(set(y_train.tolist())) < 2:
        raise ValueError("the training snapshot has fewer than two classes")
    out = {}
    for name in names:
        if on_step:
            on_step(name)
        clf = make_classifier(name, seed)
        if name == "knn3" and len(y_train) < 3:
            raise ValueError("k-NN (k=3) needs at least three training cells")
        clf.fit(X_train, y_train)
        out[name] = [str(p) for p in clf.predict(X_test)] if len(X_test) else []
    return out
