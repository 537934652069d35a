"""Adaptation to another microscope and stain: the default model trained on pbc-dev, then the same
model retrained with k verified cells per class from the foreign domain (bccd-dev white cells,
and synthetic shifts of the pbc-dev test cells); a candidate recipe beside today's in the same run.

    .venv/bin/python benchmarks/adaptation.py [--ks 0,5,10,20,40] [--cache-dir var/feature-cache]
        [--pbc DIR] [--bccd DIR] [--work DIR] [--seed 0]
        [--recipe reinhard] [--domains bccd,stain,hed,blur,scale,jpeg] [--part all|tune|test]
        [--backbones efficientnet_lite0] [--views id,flip] [--train-per-class N] [--test-per-class N]

* pbc-dev: test = cells whose sha256("split0:" + file name) % 5 == 0 (docs/ml.md), train = the rest.
* bccd-dev: the product's white-cell detector (slides.pipeline.find_cells) runs on every field
  with a subtype in subtypes.csv; a detection overlapping an annotated WBC box (IoU >= 0.3) is
  cropped exactly as a slide's cell is, and gets that field's subtype. BCCD does not split
  neutrophils into band and segmented: a verified neutrophil trains as ``neutrophil_segmented``
  (the large majority of neutrophils in peripheral blood), and a neutrophil read as band or
  segmented counts as right.
* k cells per class are added (a seeded order of each class; at most half of a class, so that
  every class keeps cells to measure on); every k measures on the same foreign cells: those never
  added at the largest k.
* Each retraining runs from the feature cache (pbc-dev's features are cached by the first run;
  only the added crops are featurised), timed end to end (featurising, heads, calibration, the
  out-of-distribution score, the bf16 check, saving).

Printed per k (k = 0 is the baseline, the model trained on pbc-dev alone, in the same run): on the
foreign cells, accuracy of the top class, share flagged out-of-distribution, share referred to an
expert, share accepted and wrong, accuracy on the accepted; on pbc-dev test, accuracy,
share flagged, share referred, accuracy on the accepted; the retraining time. Referred and
accepted-and-wrong are also given without the class-support and batch rules (``thin_support``,
``batch_unlike``, classifier.ml.ood), and with a batch unlike the training images referred whole
(the batch rule before its confidence floor): their baselines, on the same model and cells.
Each cell's features are read once (``EnsembleModel.view_features``; fp32 on a CPU without native
bf16, else the engine's precision without its fp32 re-check) and every model of a recipe is
measured on them (``proba_from_features``): the models share their frozen backbones.
Targets: k = 0 at most 3 % of foreign cells accepted and wrong; k = 20: >= 90 % accuracy on the
other foreign cells, pbc-dev test accuracy within 1 point of k = 0, retraining < 2 minutes.

Then, side by side, today's recipe (``default``, the baseline) and ``--recipe`` (a variant of
:data:`classifier.ml.recipes.VARIANTS`), both trained in this run on the same cells, per domain and
k: top-class accuracy, share flagged out-of-distribution, share referred, share accepted and wrong,
accuracy on the accepted, pbc-dev test accuracy and the retraining time. Domains: ``bccd`` (the
crops above) and the synthetic labs of :data:`benchmarks.shifts.DOMAINS` (stain hue and
saturation, a second stain model by colour deconvolution, blur, camera scale, JPEG): the pbc-dev
test cells under that shift, k of them per class added to the training cells (at most half a
class) and the others measured; the pbc-dev figures of such a row leave out the test cells whose
shifted copy was added.

Nothing is fitted on the measured cells: ``--part tune`` / ``test`` measures on one half of them
(by a hash of the file name), so that a choice made on ``tune`` is confirmed on ``test``.
``--backbones``, ``--views``, ``--train-per-class`` and ``--test-per-class`` make a smaller,
cheaper run (the same for both recipes; the defaults are the product's recipe on every cell).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import PARTS, add_domain_arguments, pbc_split  # noqa: E402

NEUTROPHILS = ("neutrophil_band", "neutrophil_segmented")
FOREIGN_TO_CLASS = {"neutrophil": "neutrophil_segmented"}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def foreign_crops(bccd: Path, out: Path) -> list[tuple[Path, str]]:
    """Crops of the detected white cells of bccd-dev, with their field's subtype."""
    from PIL import Image

    from slides.pipeline import find_cells, png_bytes

    subtypes = {r["image"]: r["class"] for r in csv.DictReader(open(bccd / "subtypes.csv"))}
    crops = []
    for name, cls in sorted(subtypes.items()):
        gts = []
        for obj in ET.parse(bccd / "Annotations" / f"{name}.xml").getroot().iter("object"):
            if obj.findtext("name") == "WBC":
                bb = obj.find("bndbox")
                gts.append(tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
        path0 = out / cls / f"{name}_0.png"
        if path0.exists():  # cropped by an earlier run
            crops += [(p, cls) for p in sorted((out / cls).glob(f"{name}_*.png"))]
            continue
        with Image.open(bccd / "JPEGImages" / f"{name}.jpg") as im:
            found = find_cells(im.convert("RGB")).cells
        i = 0
        for cell in found:
            if cell.needs_model and gts and max(iou(cell.box, g) for g in gts) >= 0.3:
                p = out / cls / f"{name}_{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(png_bytes(cell.crop))
                crops.append((p, cls))
                i += 1
    return crops


def ordered(paths: list[tuple[Path, str]], seed: int) -> dict[str, list[Path]]:
    by = {}
    for p, c in paths:
        by.setdefault(c, []).append(p)
    return {c: sorted(v, key=lambda p: hashlib.sha256(f"{seed}:{p.name}".encode()).hexdigest()) for c, v in by.items()}


def in_part(name: str, part: str) -> bool:
    """Whether a measured cell (by its file name) is in ``part``: tune / test halves by a hash."""
    if part == "all":
        return True
    return ("tune", "test")[int(hashlib.sha256(f"part:{name}".encode()).hexdigest(), 16) % 2] == part


def first_per_class(cells: list[tuple[Path, str]], n: int, seed: int) -> list[tuple[Path, str]]:
    """At most ``n`` cells of each class (a seeded order; ``n`` <= 0: all), in class order."""
    if n <= 0:
        return cells
    return [(p, c) for c, v in ordered(cells, seed).items() for p in v[:n]]


FEATURES: dict = {}  # (recipe, cell) -> the cell's view features and colour statistics, read once


def features_of(model, paths, recipe: str):
    """The cells' view features ({backbone: [N, views, D]}) and colour statistics [N, 40], each cell
    read once per recipe: every model of a recipe shares its frozen backbones (and preprocessing);
    a model with fine-tuned backbones has features of its own."""
    import numpy as np

    if model.backbones_tuned:
        recipe = f"{recipe}:{model.sha256}"
    todo = [p for p in dict.fromkeys(paths) if (recipe, p) not in FEATURES]
    if todo:
        feats, colour = model.view_features(todo)
        for i, p in enumerate(todo):
            FEATURES[(recipe, p)] = ({b: f[i] for b, f in feats.items()}, colour[i])
    rows = [FEATURES[(recipe, p)] for p in paths]
    return {b: np.stack([r[0][b] for r in rows]) for b in model.backbones}, np.stack([r[1] for r in rows])


def measure(model, paths, truth, *, foreign: bool, recipe: str) -> dict:
    """The figures of one model on one set of cells, measured once without the aligned best guess
    (the baseline) and once with it (``classifier.ml.alignment``: only the best guess of cells
    unlike the training images changes, so the referrals must not)."""
    import copy

    proba = model.proba_from_features(*features_of(model, paths, recipe), align=False)
    preds = model.decide(copy.copy(proba))
    # the baselines of the class-support and batch rules (classifier.ml.ood), on the same cells: without
    # both, and with the batch rule as it was (a batch unlike the training images referred whole)
    unsupported = copy.copy(proba)
    unsupported.support = None
    base_preds = model.decide(unsupported, batch_check=False)
    floor, model.batch_confidence = model.batch_confidence, float("inf")
    try:
        whole_preds = model.decide(copy.copy(proba))
    finally:
        model.batch_confidence = floor
    realigned = model.realign(copy.deepcopy(proba))
    aligned_preds = model.decide(realigned)
    # the plain alignment (the training cells' mean and spread, no class mix): the baseline of the
    # class-balanced one, on the same model and cells
    prior, model.class_prior = model.class_prior, None
    try:
        plain_preds = model.decide(model.realign(copy.deepcopy(proba)))
    finally:
        model.class_prior = prior
    n = len(preds)

    def right(p, t):
        return p.top_class in NEUTROPHILS if (foreign and t == "neutrophil") else p.top_class == t

    ok = [right(p, t) for p, t in zip(preds, truth)]
    ok_aligned = [right(p, t) for p, t in zip(aligned_preds, truth)]
    ok_plain = [right(p, t) for p, t in zip(plain_preds, truth)]
    acc = [o for o, p in zip(ok, preds) if not p.abstained]
    referred = [o for o, p in zip(ok_aligned, aligned_preds) if p.abstained]
    return {
        "n": n,
        "accuracy": sum(ok) / n,
        "aligned_accuracy": sum(ok_aligned) / n,
        "plain_aligned_accuracy": sum(ok_plain) / n,
        "aligned_share": float(realigned.aligned.mean()) if realigned.aligned is not None and n else 0.0,
        "referred_right": (sum(referred) / len(referred)) if referred else float("nan"),
        "ood": sum(p.out_of_distribution for p in preds) / n,
        "referred": sum(p.abstained for p in preds) / n,
        "referred_aligned": sum(p.abstained for p in aligned_preds) / n,
        "accepted_wrong": sum((not o) and not p.abstained for o, p in zip(ok, preds)) / n,
        "accepted_wrong_aligned": sum((not o) and not p.abstained for o, p in zip(ok_aligned, aligned_preds)) / n,
        "accepted_accuracy": (sum(acc) / len(acc)) if acc else float("nan"),
        "thin_support": sum("thin_support" in p.reasons for p in preds) / n,
        "batch_unlike": sum("batch_unlike" in p.reasons for p in preds) / n,
        "referred_without_rules": sum(p.abstained for p in base_preds) / n,
        "accepted_wrong_without_rules": sum((not o) and not p.abstained for o, p in zip(ok, base_preds)) / n,
        "referred_whole_batch": sum(p.abstained for p in whole_preds) / n,
        "accepted_wrong_whole_batch": sum((not o) and not p.abstained for o, p in zip(ok, whole_preds)) / n,
    }


def train_and_load(api, items, classes, *, cache_dir: Path, out_dir: Path, seed: int, run: dict):
    """Train from the feature cache (timed end to end) and load the model."""
    t0 = time.perf_counter()
    result = api.train(items, classes=classes, cache_dir=cache_dir, out_dir=out_dir, device="cpu", seed=seed,
                       ensemble=run["ensemble"], config_overrides=run["overrides"])
    seconds = time.perf_counter() - t0
    return api.load_ensemble(result.checkpoint_path, device="cpu"), seconds


def main() -> None:
    from classifier.ml.recipes import VARIANTS

    from benchmarks.shifts import DOMAINS, write_domain

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="0,5,10,20,40")
    add_domain_arguments(ap, work="adaptation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default=None, choices=sorted(VARIANTS),
                    help="a candidate recipe, trained and measured beside today's (the baseline)")
    ap.add_argument("--domains", default="bccd," + ",".join(DOMAINS),
                    help=f"foreign domains of the side-by-side table: bccd and any of {', '.join(DOMAINS)}")
    ap.add_argument("--part", default="all", choices=PARTS, help="measure on this half of the cells (tune / test)")
    ap.add_argument("--backbones", default=None, help="comma-separated (default: the offline ensemble)")
    ap.add_argument("--views", default=None, help="cached views, comma-separated (default: the recipe's)")
    ap.add_argument("--train-per-class", type=int, default=0, help="pbc-dev training cells per class (0: all)")
    ap.add_argument("--test-per-class", type=int, default=0, help="pbc-dev test cells per class (0: all)")
    args = ap.parse_args()

    import torch

    from classifier.ml import api
    from classifier.ml.device import set_threads

    set_threads(args.threads or os.cpu_count() or 1)
    ks = sorted({int(k) for k in args.ks.split(",")})
    domains = [d for d in args.domains.split(",") if d]
    unknown = set(domains) - {"bccd", *DOMAINS}
    if unknown:
        ap.error(f"unknown domains {sorted(unknown)}")
    work = Path(args.work)
    cache_dir = Path(args.cache_dir)
    reduced = {}
    if args.views:
        reduced["views"] = args.views.split(",")
    ensemble = args.backbones.split(",") if args.backbones else "offline"
    runs = {"default": {"ensemble": ensemble, "overrides": dict(reduced)}}
    if args.recipe:
        runs[args.recipe] = {"ensemble": ensemble, "overrides": dict(reduced, **VARIANTS[args.recipe])}
    classes, train, test = pbc_split(Path(args.pbc))
    train = first_per_class(train, args.train_per_class, args.seed)
    test = first_per_class(test, args.test_per_class, args.seed)
    base_items = [api.TrainItem(path=p, sha256=sha256_of(p), label=c) for p, c in train]
    test_measured = [(p, c) for p, c in test if in_part(p.name, args.part)]

    crops = foreign_crops(Path(args.bccd), work / "crops")
    if "bccd" not in domains:
        domains.insert(0, "bccd")  # the first table (earlier runs' output) is bccd-dev's
    sources = {"bccd": crops}
    for d in domains:
        if d != "bccd":
            sources[d] = write_domain(test, d, work / "shifts" / d)
    k_max = max(ks)
    plans = {}
    for d, cells in sources.items():
        order = ordered(cells, args.seed)
        cap = {c: len(v) // 2 for c, v in order.items()}
        held = [(p, c) for c, v in order.items() for p in v[min(k_max, cap[c]):] if in_part(p.name, args.part)]
        plans[d] = (order, cap, held)
    order, cap, held_foreign = plans["bccd"]
    counts = {c: len(v) for c, v in order.items()}
    print(f"# adaptation benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; pbc-dev train {len(base_items)}, test {len(test)} (measured: {len(test_measured)}, "
          f"part {args.part}); bccd-dev crops {counts} "
          f"(at most half of a class is added); measured on {len(held_foreign)} foreign cells never added "
          f"({ {c: sum(1 for _, x in held_foreign if x == c) for c in order} })")
    print(f"# backbones {ensemble}; views {args.views or 'as the recipe'}; train per class {args.train_per_class or 'all'}; "
          f"test per class {args.test_per_class or 'all'}; recipes: " + "; ".join(
              f"{name} {run['overrides'] or '(as it is)'}" for name, run in runs.items()))
    print("# neutrophil (BCCD does not split them): trains as neutrophil_segmented; band or segmented counts as right")
    header = (f"{'k':>3} {'added':>5} | {'foreign acc':>11} {'OOD':>6} {'referred':>8} {'acc&wrong':>9} "
              f"{'acc(acc.)':>9} | {'pbc acc':>7} {'OOD':>6} {'referred':>8} {'acc(acc.)':>9} | {'retrain s':>9}")

    def label_of(d, c):
        return FOREIGN_TO_CLASS.get(c, c) if d == "bccd" else c

    def pbc_without(added):
        names = {Path(p).stem for p, _ in added}
        return [(p, c) for p, c in test_measured if p.stem not in names]

    results = {}  # (recipe, domain, k) -> (foreign, pbc, seconds, added)
    k0 = {}
    print("# each row as it is measured (the recipes alternate, so that a cut run still compares them):")
    for k in ks:
        for d in domains:
            order_d, cap_d, held_d = plans[d]
            added = [(p, c) for c, v in order_d.items() for p in v[:min(k, cap_d[c])]]
            for name, run in runs.items():
                if not added and name in k0:  # k = 0: one model, measured on every domain
                    model, seconds, d_pbc = k0[name]
                else:
                    items = base_items + [api.TrainItem(path=p, sha256=sha256_of(p), label=label_of(d, c))
                                          for p, c in added]
                    model, seconds = train_and_load(api, items, classes, cache_dir=cache_dir,
                                                    out_dir=work / "models" / name / f"{d}-k{k}", seed=args.seed,
                                                    run=run)
                    pbc_cells = pbc_without(added) if d != "bccd" else test_measured
                    d_pbc = measure(model, [p for p, _ in pbc_cells], [c for _, c in pbc_cells], foreign=False,
                                    recipe=name)
                    if not added:
                        k0[name] = (model, seconds, d_pbc)
                f = measure(model, [p for p, _ in held_d], [c for _, c in held_d], foreign=d == "bccd", recipe=name)
                results[(name, d, k)] = (f, d_pbc, seconds, len(added))
                print(f"#   {name}: {d} k={k} ({len(added)} added): acc {f['accuracy']:.1%} (aligned best guess "
                      f"{f['aligned_accuracy']:.1%}, plainly aligned {f['plain_aligned_accuracy']:.1%}, on {f['aligned_share']:.0%} of the cells; referred "
                      f"{f['referred_aligned']:.1%}, accepted&wrong {f['accepted_wrong_aligned']:.1%}; best guess "
                      f"right on the referred {f['referred_right']:.1%}), OOD {f['ood']:.1%}, "
                      f"referred {f['referred']:.1%} ({f['referred_without_rules']:.1%} without the batch and support rules, "
                      f"{f['referred_whole_batch']:.1%} with an unlike batch referred whole; "
                      f"batch {f['batch_unlike']:.1%}, thin support {f['thin_support']:.1%}), "
                      f"accepted&wrong {f['accepted_wrong']:.1%} ({f['accepted_wrong_without_rules']:.1%}, "
                      f"{f['accepted_wrong_whole_batch']:.1%}), acc(accepted) "
                      f"{f['accepted_accuracy']:.1%}; pbc {d_pbc['accuracy']:.1%} ({d_pbc['n']} cells), referred "
                      f"{d_pbc['referred']:.1%} ({d_pbc['referred_without_rules']:.1%}), acc(accepted) {d_pbc['accepted_accuracy']:.1%}; "
                      f"{seconds:.1f} s",
                      flush=True)
    for name in runs:
        print(f"\n## recipe {name}: bccd-dev" + (" (the table of earlier runs)" if name == "default" else ""))
        print(header)
        print("-" * len(header))
        for k in ks:
            f, d_pbc, seconds, n_added = results[(name, "bccd", k)]
            print(f"{k:>3} {n_added:>5} | {f['accuracy']:>11.1%} {f['ood']:>6.1%} {f['referred']:>8.1%} "
                  f"{f['accepted_wrong']:>9.1%} {f['accepted_accuracy']:>9.1%} | {d_pbc['accuracy']:>7.1%} "
                  f"{d_pbc['ood']:>6.1%} {d_pbc['referred']:>8.1%} {d_pbc['accepted_accuracy']:>9.1%} | "
                  f"{seconds:>9.1f}", flush=True)
        rows = {k: results[(name, "bccd", k)] for k in ks}
        if 0 in rows:
            base_f, base_d, _, _ = rows[0]
            print(f"# k = 0 (baseline): foreign accepted and wrong {base_f['accepted_wrong']:.1%} (target <= 3 %)")
            if 20 in rows:
                f, d, s, _ = rows[20]
                print(f"# k = 20: foreign accuracy {f['accuracy']:.1%} (target >= 90 %); pbc-dev test "
                      f"{d['accuracy']:.1%} vs {base_d['accuracy']:.1%} at k = 0 (target within 1 point); "
                      f"retraining {s:.0f} s (target < 120 s)")
    print_side_by_side(results, list(runs), domains, ks)


def print_side_by_side(results: dict, names: list[str], domains: list[str], ks: list[int]) -> None:
    """One line per domain and k, each recipe's figures beside the baseline's."""
    cols = ("acc", "plain al.", "aligned", "ref.right", "OOD", "batch", "thin sup.", "ref. none", "ref. whole", "referred",
            "a&w none", "a&w whole", "acc&wrong", "acc(acc.)", "pbc ref.", "pbc a&w", "pbc acc", "retrain s")
    width = 9
    print("\n## side by side (foreign = that domain's cells never added; pbc = pbc-dev test cells never added "
          "in any form; acc = top class right, as today; aligned = top class right with the aligned best guess of "
          "classifier.ml.alignment (class-balanced where the checkpoint has its class frequencies); plain al. = "
          "with the plain alignment (no class mix), the baseline of the class-balanced one; ref.right = best guess right on the referred cells, aligned; "
          "batch = referred as part of a batch unlike the training images (and not flagged alone); thin sup. = referred for "
          "thin class support (classifier.ml.ood); ref. none and a&w none = referred and accepted-and-wrong without those two "
          "rules; ref. whole and a&w whole = with them, a batch unlike the training images referred whole (the rule before its "
          "confidence floor); both baselines on the same model and cells; pbc ref. / a&w = pbc-dev test referred / accepted "
          "and wrong)")
    top = f"{'domain':<7} {'k':>3} {'added':>5} " + " ".join(f"| {n:^{(width + 1) * len(cols) - 1}} " for n in names)
    sub = f"{'':<7} {'':>3} {'':>5} " + " ".join("| " + " ".join(f"{c:>{width}}" for c in cols) + " " for _ in names)
    print(top)
    print(sub)
    print("-" * len(sub))
    for d in domains:
        for k in ks:
            if not all((n, d, k) in results for n in names):
                continue
            added = results[(names[0], d, k)][3]
            line = f"{d:<7} {k:>3} {added:>5} "
            for n in names:
                f, p, s, _ = results[(n, d, k)]
                vals = (f"{f['accuracy']:.1%}", f"{f['plain_aligned_accuracy']:.1%}", f"{f['aligned_accuracy']:.1%}", f"{f['referred_right']:.1%}",
                        f"{f['ood']:.1%}", f"{f['batch_unlike']:.1%}", f"{f['thin_support']:.1%}",
                        f"{f['referred_without_rules']:.1%}", f"{f['referred_whole_batch']:.1%}",
                        f"{f['referred']:.1%}", f"{f['accepted_wrong_without_rules']:.1%}",
                        f"{f['accepted_wrong_whole_batch']:.1%}", f"{f['accepted_wrong']:.1%}",
                        f"{f['accepted_accuracy']:.1%}", f"{p['referred']:.1%}", f"{p['accepted_wrong']:.1%}",
                        f"{p['accuracy']:.1%}", f"{s:.0f}")
                line += "| " + " ".join(f"{v:>{width}}" for v in vals) + " "
            print(line, flush=True)


if __name__ == "__main__":
    main()
