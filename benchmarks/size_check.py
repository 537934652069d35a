"""Would a size statistic let the out-of-distribution check catch another magnification?

A camera 25 % larger lets 6.5 % of its cells through accepted and wrong (docs/ml.md): the check's
colour statistics barely move with the cell's size. This measures, on the colour check alone (no
network: the same k-nearest rule as ``classifier.ml.ood``, fitted on pbc-dev training cells,
threshold at 97.5 % of 300 validation cells), how many pbc-dev test cells each candidate flags
under graded magnification and the other shifts of ``benchmarks/shifts.py``:

* ``colour (today)``: the check's 40 colour statistics (the baseline);
* ``colour + size``: plus four size statistics of the 96 px image: the share of dark pixels
  (under the midpoint of the 5th and 50th luminance percentiles: the nucleus) and their radius of
  gyration, the share of strongly stained pixels and theirs;
* ``size``: the four alone;
* each also class-conditionally (a bank per class, the cell judged by its own class's bank: the
  best case, since the product would only have the model's vote).

    .venv/bin/python benchmarks/size_check.py [--test-cells 400]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SHARED, pbc_split  # noqa: E402
from benchmarks.shifts import shifted  # noqa: E402

SHIFTS = {"none": None, "scale x1.25": ("scale", 1.25), "scale x1.4": ("scale", 1.4), "scale x0.8": ("scale", 0.8),
          "blur 2 px": ("blur", 2.0), "JPEG 30": ("jpeg", 30)}


def size_statistics(x: np.ndarray) -> np.ndarray:
    """uint8 images [B, 3, S, S] -> [B, 4] (see the module's docstring)."""
    x = x.astype(np.float32) / 255.0
    b, _, s, _ = x.shape
    yy, xx = (a.reshape(-1) / s for a in np.mgrid[0:s, 0:s])

    def share_and_radius(mask):
        n = np.maximum(mask.sum(1), 1)
        cy, cx = (mask * yy).sum(1) / n, (mask * xx).sum(1) / n
        return mask.mean(1), np.sqrt((mask * ((yy - cy[:, None]) ** 2 + (xx - cx[:, None]) ** 2)).sum(1) / n)

    rgb = x.reshape(b, 3, -1)
    lum = rgb.mean(1)
    dark = lum < (np.percentile(lum, 5, 1, keepdims=True) + np.percentile(lum, 50, 1, keepdims=True)) / 2
    v = rgb.max(1)
    sat = np.where(v > 0, (v - rgb.min(1)) / np.maximum(v, 1e-6), 0.0)
    stained = sat > (np.percentile(sat, 50, 1, keepdims=True) + np.percentile(sat, 95, 1, keepdims=True)) / 2
    return np.stack([*share_and_radius(dark), *share_and_radius(stained)], 1)


def main() -> None:
    from classifier.ml.ood import COLOUR_SIZE, QUANTILE, colour_features, fit_ood

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pbc", default=str(SHARED / "pbc-dev"))
    ap.add_argument("--test-cells", type=int, default=400, help="pbc-dev test cells measured (spread over classes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    classes, train, test = pbc_split(Path(args.pbc))
    rng = np.random.default_rng(args.seed)
    train = [train[i] for i in rng.permutation(len(train))]
    val, train = train[:300], train[300:]
    test = [test[i] for i in rng.permutation(len(test))[:args.test_cells]]

    def stats(items, shift=None):
        ims = []
        for p, _ in items:
            im = shifted(p, *shift) if shift else Image.open(p).convert("RGB")
            ims.append(np.asarray(im.resize((COLOUR_SIZE, COLOUR_SIZE), Image.BILINEAR)).transpose(2, 0, 1))
        x = np.stack(ims)
        return colour_features(x), size_statistics(x)

    def labels(items):
        return np.array([classes.index(c) for _, c in items])

    tr, va = stats(train), stats(val)
    te = {name: stats(test, s) for name, s in SHIFTS.items()}
    ltr, lva, lte = labels(train), labels(val), labels(test)
    candidates = {"colour (today)": lambda c, s: c, "colour + size": lambda c, s: np.concatenate([c, s], 1),
                  "size": lambda c, s: s}
    print(f"# size-statistic check: pbc-dev train {len(train)} (bank), validation {len(val)} (threshold at "
          f"{QUANTILE} %), test {len(test)} per shift; k = 5, the colour check's rule; share of test cells flagged")
    print(f"{'candidate':<36}" + "".join(f"{n:>13}" for n in SHIFTS))
    for name, use in candidates.items():
        t, v = use(*tr), use(*va)
        mu, sd = t.mean(0), t.std(0) + 1e-6
        for conditional in (False, True):
            groups = range(len(classes)) if conditional else [None]
            models = {}
            for g in groups:
                st, sv = (ltr == g, lva == g) if conditional else (slice(None), slice(None))
                models[g] = fit_ood({"c": (t[st] - mu) / sd}, {"c": (v[sv] - mu) / sd}, k=5, quantile=QUANTILE,
                                    metric="euclidean", train_labels=None if conditional else ltr)

            def score(x, lab):
                out = np.zeros(len(x))
                for g, m in models.items():
                    sel = (lab == g) if conditional else slice(None)
                    out[sel] = m.score({"c": (x[sel] - mu) / sd})
                return out

            th = np.percentile(score(v, lva), QUANTILE)
            row = [np.mean(score(use(*te[s]), lte) > th) * 100 for s in SHIFTS]
            label = name + (", per class" if conditional else "")
            print(f"{label:<36}" + "".join(f"{r:>12.1f}%" for r in row), flush=True)
    print(f"# {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
