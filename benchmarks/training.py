"""Training cost: featurising, retraining the heads from the feature cache, adding new cells.

    .venv/bin/python benchmarks/training.py [--cells 3600] [--new 100] [--ensemble offline]
        [--mode default|frozen|finetune] [--featurise-cells 160] [--cache-dir var/feature-cache]

1. featurise: a fresh, empty cache; --featurise-cells real pbc-dev cells per backbone (time and
   cells/s, measured; the time for --cells is extrapolated from that rate and says so).
2. retrain from cache: the ensemble trained on --cells cells whose features are already cached
   (a first training fills --cache-dir if it is cold; that run is reported separately).
3. add --new cells: retraining featurises only those, then retrains.
Target (2 CPU cores): the heads of an ensemble retrained from cache on 3,600 cells in < 60 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import SHARED  # noqa: E402

DATA = Path(os.environ.get("PBC_DEV", SHARED / "pbc-dev"))


def items_balanced(n: int):
    from classifier.ml.api import TrainItem

    classes = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    per = {c: sorted((DATA / c).glob("*.jpg")) for c in classes}
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in per.values()):
        for c in classes:
            if i < len(per[c]) and len(out) < n:
                p = per[c][i]
                out.append(TrainItem(path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), label=c))
        i += 1
    return classes, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=3600)
    ap.add_argument("--new", type=int, default=100)
    ap.add_argument("--ensemble", default="offline")
    ap.add_argument("--mode", default="default")
    ap.add_argument("--featurise-cells", type=int, default=160)
    ap.add_argument("--cache-dir", default=str(REPO / "var" / "feature-cache"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-featurise", action="store_true")
    args = ap.parse_args()

    import torch

    from classifier.ml.api import train
    from classifier.ml.device import set_threads
    from classifier.ml.features import FeatureCache, FeatureKey, featurise, make_extractor
    from classifier.ml.recipes import input_size_for, recipe
    from classifier.ml.registry import get_spec, resolve_ensemble

    threads = set_threads(args.threads) if args.device == "cpu" else None
    classes, all_items = items_balanced(args.cells + args.new)
    base, new = all_items[: args.cells], all_items[args.cells: args.cells + args.new]
    cfg = recipe(args.mode)
    backbones = resolve_ensemble(args.ensemble)
    print(f"# training benchmark: device={args.device}, threads={threads}, torch {torch.__version__}, "
          f"ensemble={args.ensemble} {backbones}, mode={args.mode}, {len(base)} cells + {len(new)} new")

    if not args.skip_featurise:
        print(f"\n## 1. featurise (fresh cache, {args.featurise_cells} real cells, views={cfg['views']})")
        print("(baseline: PyTorch, bf16 autocast where the CPU has it, as the engine ran before; "
              "new: the runtime training uses now)")
        print(f"{'backbone':<22} {'cells':>6} {'baseline cells/s':>16} {'new cells/s':>12} {'runtime':>9} "
              f"{f'est. {args.cells} cells (base/new)':>30}")
        sample = all_items[: args.featurise_cells]
        kind = "prefix" if cfg.get("finetune_epochs") else cfg["features"]
        from classifier.ml.device import default_precision
        from classifier.ml.runtime import compile_extractor, resolve_runtime

        dev = torch.device(args.device)
        rt = resolve_runtime("auto", dev)
        new_prec = "fp32" if rt == "openvino" else default_precision(dev)
        with tempfile.TemporaryDirectory() as tmp:
            for b in backbones:
                spec = get_spec(b)
                size = input_size_for(cfg, b, spec.input_size)
                ext, ident = make_extractor(b, kind, weights="imagenet", input_size=size)
                rates = []
                for label, prec, runner in (("base", default_precision(dev), ext),
                                            ("new", new_prec, compile_extractor(ext, size, runtime=rt, device=dev,
                                                                               precision=new_prec,
                                                                               normalisation=(spec.mean, spec.std)))):
                    cache = FeatureCache(Path(tmp) / label, FeatureKey(b, ident, kind, size, tuple(cfg["views"]), prec))
                    t = time.perf_counter()
                    featurise([(it.sha256, it.path) for it in sample], extractor=runner, spec=spec, cache=cache,
                              device=dev)
                    rates.append(len(sample) / (time.perf_counter() - t))
                print(f"{b:<22} {len(sample):>6} {rates[0]:>16.2f} {rates[1]:>12.2f} {rt:>9} "
                      f"{args.cells / rates[0]:>20.0f} s / {args.cells / rates[1]:.0f} s", flush=True)

    cache_dir = Path(args.cache_dir)
    with tempfile.TemporaryDirectory() as out:
        kw = dict(classes=classes, ensemble=args.ensemble, mode=args.mode, cache_dir=cache_dir, out_dir=Path(out),
                  device=args.device)
        t = time.perf_counter()
        first = train(base, **kw)
        t_first = time.perf_counter() - t
        new_first = sum(v["new"] for v in first.metrics["featurised"].values())
        print(f"\n## 2. retrain from the cache ({len(base)} cells)")
        if new_first:
            print(f"(the cache was cold: the first training featurised {new_first} backbone-cells and took {t_first:.1f} s)")
        t = time.perf_counter()
        again = train(base, **kw)
        t_again = time.perf_counter() - t
        assert sum(v["new"] for v in again.metrics["featurised"].values()) == 0
        print(f"{'step':<40} {'seconds':>8} {'featurised':>10} {'val acc (vote)':>15}")
        print(f"{'retrain all heads from cache':<40} {t_again:>8.1f} {0:>10} "
              f"{again.metrics.get('val_accuracy_majority', float('nan')):>15.4f}")
        print(f"{'  of which heads (+fine-tuning)':<40} {again.metrics['heads_seconds']:>8.1f}")
        t = time.perf_counter()
        grown = train(base + new, **kw)
        t_grown = time.perf_counter() - t
        n_new = {b: v["new"] for b, v in grown.metrics["featurised"].items()}
        print(f"{f'retrain after adding {len(new)} new cells':<40} {t_grown:>8.1f} {sum(n_new.values()):>10} "
              f"{grown.metrics.get('val_accuracy_majority', float('nan')):>15.4f}")
        print(f"  featurised per backbone: {n_new} (new cells already cached by an earlier run, same sha256 and "
              f"settings, are not featurised again)")
    print("# target (2 CPU cores): heads of an ensemble retrained from cache on 3,600 cells < 60 s")


if __name__ == "__main__":
    main()
