"""The out-of-distribution score: candidate scores measured side by side, and the chosen one under
graded shifts of in-domain cells.

    .venv/bin/python benchmarks/ood.py [--checkpoint PATH] [--cache-dir var/feature-cache]
        [--work var/bench/ood] [--shift-cells 300]

1. The model: ``--checkpoint`` (trained on the pbc-dev train split), else the default recipe is
   trained on that split here (its features come from, and go to, the feature cache). The split
   is the one of docs/ml.md and benchmarks/adaptation.py.
2. Candidates, each fitted on the training cells' features (the mean of the test-time views, as
   the engine computes them) with its threshold at the 97.5th percentile of the validation cells:
   AUROC between held-out pbc-dev cells (in-domain) and white cells cropped by the product's
   detector from bccd-dev fields (another microscope, camera and stain), and the share of each
   flagged. The engine's own score (what the product uses) is the last row.
3. Graded shifts of held-out pbc-dev cells (what another lab's stain, focus, magnification or
   camera could do): for each, accuracy of the top class, share flagged, share referred for any
   reason, and share accepted and wrong. The unshifted cells are the baseline, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from adaptation import foreign_crops, sha256_of  # noqa: E402
from benchmarks.common import add_domain_arguments, pbc_split  # noqa: E402
from benchmarks.shifts import shifted  # noqa: E402


def auroc(inside, outside) -> float:
    from sklearn.metrics import roc_auc_score
    import numpy as np

    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


SHIFTS = [("none", 0), ("hue", 15), ("hue", 30), ("hue", 60), ("saturation", 0.5), ("saturation", 1.6),
          ("brightness", 0.8), ("brightness", 1.2), ("blur", 1.5), ("blur", 3), ("scale", 0.7), ("scale", 1.4),
          ("jpeg", 20)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    add_domain_arguments(ap, work="ood")
    ap.add_argument("--shift-cells", type=int, default=300)
    args = ap.parse_args()

    import numpy as np
    import torch

    from classifier.ml import api
    from classifier.ml.checkpoint import load_checkpoint
    from classifier.ml.device import set_threads
    from classifier.ml.features import FeatureCache, FeatureKey, load_features
    from classifier.ml.ood import MAX_BANK, fit_ood, kth_distance, l2_normalise
    from classifier.ml.training import softmax_np, stratified_split
    from classifier.ml.voting import vote

    set_threads(args.threads or os.cpu_count() or 1)
    work = Path(args.work)
    classes, train, test = pbc_split(Path(args.pbc))
    items = [api.TrainItem(path=p, sha256=sha256_of(p), label=c) for p, c in train]
    ckpt_path = args.checkpoint
    if ckpt_path is None:
        ckpt_path = api.train(items, classes=classes, cache_dir=Path(args.cache_dir), out_dir=work / "model",
                              device="cpu").checkpoint_path
    ckpt, _ = load_checkpoint(ckpt_path)
    model = api.load_ensemble(ckpt_path, device="cpu")
    cfg, B = ckpt["config"], ckpt["backbones"]
    crops = foreign_crops(Path(args.bccd), work.parent / "adaptation" / "crops")

    # training features as the engine sees them (mean over the test-time views), from the cache
    shas = [it.sha256 for it in items]
    y = np.array([classes.index(it.label) for it in items])
    tr, va = stratified_split(shas, y, fraction=float(cfg["val_fraction"]), seed=int(ckpt.get("seed", 0)))
    tta = [list(cfg["views"]).index(v) for v in cfg["tta_views"]]
    feats = {}
    for b in B:
        folder = Path(args.cache_dir) / ckpt["backbone_info"][b]["feature_key"]
        meta = json.loads((folder / "key.json").read_text())
        key = FeatureKey(**dict(meta, views=tuple(meta["views"])))
        feats[b] = load_features(FeatureCache(args.cache_dir, key), shas)[:, tta].mean(1)
    sets = {}
    for name, paths in (("test", [p for p, _ in test]), ("foreign", [p for p, _ in crops])):
        proba = model.predict_proba(paths, keep_features=True)
        sets[name] = proba
    bank = {b: feats[b][tr] for b in B}
    val = {b: feats[b][va] for b in B}

    def logits_of(f):  # heads on features, per backbone [B, N, C]
        with torch.inference_mode():
            return np.stack([model.heads[b](torch.from_numpy(np.asarray(f[b], np.float32))).numpy() for b in B])

    def probs_of(z):
        return np.stack([softmax_np(z[i], model.temperature[b]) for i, b in enumerate(B)])

    def combine(per):  # mean of per-backbone z-scores against the validation cells
        return {s: np.mean([(per[b][s] - np.median(per[b]["val"])) / (per[b]["val"].std() + 1e-9) for b in B], 0)
                for s in ("val", "test", "foreign")}

    data = {"val": val, "test": sets["test"].features, "foreign": sets["foreign"].features}
    cands = {}
    for k in (1, 5, 10, 50):
        cands[f"kNN cosine, k={k}"] = combine({b: {s: kth_distance(l2_normalise(bank[b]), l2_normalise(d[b]), k)
                                                   for s, d in data.items()} for b in B})
    per_std, per_pca, per_maha = {}, {}, {}
    from sklearn.decomposition import PCA

    for b in B:
        mu, sd = bank[b].mean(0), bank[b].std(0) + 1e-3
        pca = PCA(256, random_state=0).fit((bank[b] - mu) / sd)
        A = l2_normalise((bank[b] - mu) / sd)
        per_std[b] = {s: kth_distance(A, l2_normalise((d[b] - mu) / sd), 5) for s, d in data.items()}
        Z = pca.transform((bank[b] - mu) / sd)
        per_pca[b] = {s: kth_distance(l2_normalise(Z), l2_normalise(pca.transform((d[b] - mu) / sd)), 5)
                      for s, d in data.items()}
        yb = y[tr]
        means = np.stack([Z[yb == c].mean(0) for c in range(len(classes))])
        icov = np.linalg.inv(np.cov((Z - means[yb]).T) + 1e-3 * np.eye(Z.shape[1]))

        def maha(x, mu=mu, sd=sd, pca=pca, means=means, icov=icov):
            d = pca.transform((x - mu) / sd)[:, None, :] - means[None]
            return np.einsum("ncd,de,nce->nc", d, icov, d).min(1)

        per_maha[b] = {s: maha(d[b]) for s, d in data.items()}
    fitted = fit_ood(bank, val, train_labels=y[tr], k=int(cfg.get("ood_k", 5)), max_bank=MAX_BANK)
    rel = {s: fitted.measures(d)[1] for s, d in data.items()}
    cands["relative distance only (k=5, to the neighbours' own; LOF-like)"] = rel
    cands["kNN cosine on standardised features, k=5"] = combine(per_std)
    cands["kNN cosine after PCA to 256, k=5"] = combine(per_pca)
    cands["Mahalanobis, class means + shared covariance (PCA 256)"] = combine(per_maha)
    msp, energy = {}, {}
    for s, d in data.items():
        z = logits_of(d)
        msp[s] = -vote(probs_of(z)).confidence
        energy[s] = -np.mean([np.log(np.exp(z[i]).sum(1)) for i in range(len(B))], 0)
    cands["max softmax probability (the confidence)"] = msp
    cands["energy (-logsumexp of the logits)"] = energy
    # colour statistics (read as the engine reads them) of the same cells
    from classifier.ml.ood import COLOUR_SIZE, colour_features, fit_ood_check
    from classifier.ml.preprocess import batched_resized

    def colour(paths):
        return np.concatenate([colour_features(b[COLOUR_SIZE]) for _, b in batched_resized(list(paths), [COLOUR_SIZE], 64)])

    train_colour = colour([it.path for it in items])
    colours = {"val": train_colour[va], "test": colour([p for p, _ in test]), "foreign": colour([p for p, _ in crops])}
    check = fit_ood_check(bank, val, train_colour[tr], train_colour[va], train_labels=y[tr])
    cands["colour statistics alone (euclidean, k=5, min of both distances)"] = {
        s: check.colour.score(check._colour(c)) for s, c in colours.items()}
    cands["features alone: min(distance, relative distance), k=5"] = {s: fitted.score(d) for s, d in data.items()}
    cands["engine: features or colour over its threshold (the product)"] = {
        "val": check.assess(val, colours["val"]).score, "test": sets["test"].ood_scores,
        "foreign": sets["foreign"].ood_scores}

    print(f"# OOD benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads; checkpoint {Path(ckpt_path).name}; "
          f"bank {len(tr)} training cells, threshold from {len(va)} validation cells; in-domain: {len(test)} "
          f"held-out pbc-dev cells; foreign: {len(crops)} bccd-dev white cells cropped by the detector")
    head = f"{'score':<66} {'AUROC':>6} {'val flagged':>11} {'in-domain flagged':>17} {'foreign flagged':>15}"
    print(head)
    print("-" * len(head))
    for name, sc in cands.items():
        t = float(np.percentile(sc["val"], 97.5)) if not name.startswith("engine") else model.ood.threshold
        print(f"{name:<66} {auroc(sc['test'], sc['foreign']):>6.3f} {np.mean(sc['val'] > t):>11.1%} "
              f"{np.mean(sc['test'] > t):>17.1%} {np.mean(sc['foreign'] > t):>15.1%}")

    # graded shifts of in-domain cells
    sub = test[:: max(1, len(test) // args.shift_cells)][: args.shift_cells]
    truth = [c for _, c in sub]
    print(f"\n# graded shifts of {len(sub)} held-out pbc-dev cells (every {max(1, len(test) // args.shift_cells)}th); "
          "'none' is the baseline")
    head = f"{'shift':<18} {'accuracy':>8} {'OOD':>6} {'referred':>8} {'accepted & wrong':>16} {'median score':>12}"
    print(head)
    print("-" * len(head))
    for kind, level in SHIFTS:
        images = [Image_open(p) if kind == "none" else shifted(p, kind, level) for p, _ in sub]
        preds = model.predict(images)
        ok = np.array([p.top_class == t for p, t in zip(preds, truth)])
        referred = np.array([p.abstained for p in preds])
        ood = np.array([p.out_of_distribution for p in preds])
        label = "none" if kind == "none" else f"{kind} {level}"
        print(f"{label:<18} {ok.mean():>8.1%} {ood.mean():>6.1%} {referred.mean():>8.1%} "
              f"{np.mean(~ok & ~referred):>16.1%} {np.median([p.ood_score for p in preds]):>12.2f}", flush=True)


def Image_open(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


if __name__ == "__main__":
    main()
