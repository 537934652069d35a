"""The abstention threshold of a model trained on few cells: what each confidence threshold refers
and how right the accepted cells are, for the model `make run` trains on the demo cells and for
models trained the same way on other draws of as few pbc-dev cells.

    .venv/bin/python benchmarks/threshold.py [--draws 3] [--per-class 12] [--test-per-class 40]
        [--thresholds 0,0.4,0.5,0.55,0.6,0.7,0.8] [--cache-dir var/feature-cache] [--pbc DIR]

* Models: the default recipe and the offline ensemble (what `make run` queues); "demo" is trained
  on the demo's train split (demo/cells less its last 3 cells per class, as seed_demo loads it);
  "draw k" on ``--per-class`` cells per class drawn (seeded by k) from the pbc-dev train split of
  docs/ml.md.
* Measured on ``--test-per-class`` cells per class of the pbc-dev test split (sha256("split0:" +
  file name) % 5 == 0), less any image that is also a demo cell: never seen in training.
* Each threshold applies the whole rule the engine applies (a split vote, an image unlike the
  training images and a disagreeing neighbourhood refer the cell whatever its confidence; below
  the threshold it is referred for low confidence).

Printed per model and threshold: share referred, accuracy on the accepted cells, share of all
cells accepted and wrong; and per model the validation cells, the temperatures, the threshold the
checkpoint applies and where it comes from.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import SHARED, pbc_split, print_table_header  # noqa: E402

HELDOUT_PER_CLASS = 3  # leukoportal/management/commands/seed_demo.py


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def demo_train() -> list[tuple[Path, str]]:
    out = []
    for folder in sorted(p for p in (REPO / "demo" / "cells").iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        out += [(p, folder.name) for p in files[: len(files) - HELDOUT_PER_CLASS]]
    return out


def draw(pairs: list[tuple[Path, str]], per_class: int, seed: int) -> list[tuple[Path, str]]:
    rng = random.Random(seed)
    by_class: dict[str, list] = {}
    for p, c in pairs:
        by_class.setdefault(c, []).append((p, c))
    out = []
    for c in sorted(by_class):
        out += rng.sample(by_class[c], min(per_class, len(by_class[c])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--test-per-class", type=int, default=40)
    ap.add_argument("--thresholds", default="0,0.4,0.5,0.55,0.6,0.7,0.8")
    ap.add_argument("--pbc", default=str(SHARED / "pbc-dev"))
    ap.add_argument("--cache-dir", default=str(REPO / "var" / "feature-cache"))
    ap.add_argument("--work", default=str(REPO / "var" / "bench" / "threshold"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each model's line as soon as it is measured

    import numpy as np

    from classifier.ml.api import TrainItem, load_ensemble, train

    thresholds = [float(t) for t in args.thresholds.split(",")]
    classes, pbc_train, pbc_test = pbc_split(Path(args.pbc))
    demo = demo_train()
    demo_shas = {sha256_of(p) for p in (REPO / "demo" / "cells").rglob("*") if p.is_file()}
    test = [(p, c) for p, c in draw(pbc_test, args.test_per_class, seed=0) if sha256_of(p) not in demo_shas]
    y = np.array([classes.index(c) for _, c in test])
    sets = [("demo", demo)] + [(f"draw {k}", draw(pbc_train, args.per_class, seed=100 + k)) for k in range(args.draws)]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs; test: {len(test)} pbc-dev test cells")
    rows = []
    for name, pairs in sets:
        items = [TrainItem(path=p, sha256=sha256_of(p), label=c) for p, c in pairs]
        t0 = time.time()
        result = train(items, classes=classes, ensemble="offline", mode="default", cache_dir=Path(args.cache_dir),
                       out_dir=Path(args.work) / name.replace(" ", "-"), device="cpu", threads=args.threads)
        model = load_ensemble(result.checkpoint_path, device="cpu")
        proba = model.predict_proba([p for p, _ in test])
        temps = ", ".join(f"{t:.2f}" for t in model.temperature.values())
        print(f"\n{name}: {len(items)} training cells, {result.metrics['n_val']} validation cells, "
              f"temperatures {temps}, applied threshold {model.threshold.value:.2f} ({model.threshold.why}); "
              f"trained in {time.time() - t0:.0f} s")
        for t in thresholds:
            preds = model.decide(proba, threshold=t)
            accepted = np.array([not p.abstained for p in preds])
            right = np.array([model.classes.index(p.top_class) for p in preds]) == y
            rows.append((name, t, 1 - accepted.mean(), right[accepted].mean() if accepted.any() else float("nan"),
                         (accepted & ~right).mean(), right.mean()))
            print("  threshold {1:.2f}: referred {2:.1%}, accuracy on accepted {3:.1%}, accepted and wrong {4:.1%}, "
                  "top-class accuracy {5:.1%}".format(*rows[-1]))
    print_table_header(f"{'model':<8} {'threshold':>9} {'referred':>8} {'acc(accepted)':>13} "
                       f"{'accepted+wrong':>14} {'top-class acc':>13}")
    for name, t, ref, acc, wrong, top in rows:
        print(f"{name:<8} {t:>9.2f} {ref:>8.1%} {acc:>13.1%} {wrong:>14.1%} {top:>13.1%}")


if __name__ == "__main__":
    main()
