#!/usr/bin/env python
"""Benchmark of the white-cell detector (slides.detection) on bccd-dev.

Usage (from the repo root)::

    .venv/bin/python benchmarks/detection.py                 # tune + test + all
    .venv/bin/python benchmarks/detection.py --split test    # one part only
    .venv/bin/python benchmarks/detection.py --data /path/to/bccd-like --worst 20

Protocol
--------
* Ground truth: every ``WBC`` box of the Pascal VOC annotation (duplicates,
  tiny mislabelled boxes and border cells included: nothing is cleaned).
* Predictions: detections of kind ``"wbc"`` (``smudge`` / ``artefact`` are not
  leukocytes; they are counted separately).
* Matching: greedy by score, one-to-one, IoU >= 0.5 (``--iou``).
* Split: a seeded hash of the file stem puts each field in ``tune`` (~50 %) or
  ``test``.  The detector's parameters were chosen looking ONLY at the
  ``tune`` part; ``test`` is the honest figure.  ``all`` is both together.
* Secondary figure ("interior"): GT boxes touching the image border
  (within 2 px) are set to *ignore* -- a detection matching one is neither TP
  nor FP, and an unmatched detection touching the border is not an FP --
  because BCCD annotates truncated border cells inconsistently.  The primary
  figure is the one over all boxes.
* Baseline, measured in the same run: a fixed global threshold on B - R
  (raw RGB) + connected components, component box as the cell box.

Data: Shenggan/BCCD_Dataset (MIT licence), see /work/shared/data/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from slides.detection import Detection, DetectionParams, detect_white_cells  # noqa: E402
from slides.detection.metrics import Counts, iou, match  # noqa: E402

DEFAULT_DATA = os.environ.get("LEUKO_BCCD_DIR", "/work/shared/data/bccd-dev")
SPLIT_SEED = "leukoportal-detection-v1"
BORDER_TOL = 2


def split_of(stem: str, seed: str = SPLIT_SEED) -> str:
    h = hashlib.sha1(f"{seed}:{stem}".encode()).digest()
    return "tune" if h[0] < 128 else "test"


def load_annotation(xml_path: Path, label: str = "WBC"):
    root = ET.parse(xml_path).getroot()
    boxes = []
    for o in root.findall("object"):
        if (o.findtext("name") or "").strip() != label:
            continue
        b = o.find("bndbox")
        boxes.append(tuple(int(float(b.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


def baseline_detect(rgb: np.ndarray) -> list[Detection]:
    """Plain baseline: fixed global threshold on B - R + connected components."""
    s = rgb[..., 2].astype(np.int16) - rgb[..., 0].astype(np.int16)
    mask = s > 40
    lab, n = ndi.label(mask)
    out = []
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        area = int((lab[sl] == k).sum())
        if area < 400:
            continue
        out.append(Detection(box=(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop), score=float(area)))
    return out


def touches_border(box, w, h, tol=BORDER_TOL) -> bool:
    return box[0] <= tol or box[1] <= tol or box[2] >= w - tol or box[3] >= h - tol


def evaluate(fields, detector, iou_thr: float):
    """Run ``detector`` on each field; return per-field records."""
    recs = []
    for f in fields:
        rgb = np.asarray(Image.open(f["jpg"]).convert("RGB"))
        t0 = time.perf_counter()
        dets = detector(rgb)
        dt = time.perf_counter() - t0
        wbc = [d for d in dets if d.kind == "wbc"]
        other = [d for d in dets if d.kind != "wbc"]
        pb = [d.box for d in wbc]
        ps = [d.score for d in wbc]
        m, fp, fn = match(pb, ps, f["gt"], iou_thr)
        # interior (secondary) figure
        h, w = rgb.shape[:2]
        border_gt = {j for j, g in enumerate(f["gt"]) if touches_border(g, w, h)}
        i_tp = sum(1 for (_, j, _) in m if j not in border_gt)
        i_fn = sum(1 for j in fn if j not in border_gt)
        i_fp = sum(1 for i in fp if not touches_border(pb[i], w, h))
        best_iou = [max([iou(p, g) for p in pb] or [0.0]) for g in f["gt"]]
        recs.append(
            dict(
                stem=f["stem"], split=f["split"], time=dt, tp=len(m), fp=len(fp), fn=len(fn),
                i_tp=i_tp, i_fp=i_fp, i_fn=i_fn, n_other=len(other), best_iou=best_iou,
                fp_scores=[ps[i] for i in fp], n_gt=len(f["gt"]),
            )
        )
    return recs


def summarise(recs, interior=False):
    c = Counts()
    for r in recs:
        if interior:
            c.add(r["i_tp"], r["i_fp"], r["i_fn"])
        else:
            c.add(r["tp"], r["fp"], r["fn"])
    t = float(np.mean([r["time"] for r in recs])) if recs else 0.0
    return c, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="BCCD-like folder (JPEGImages/ + Annotations/)")
    ap.add_argument("--split", choices=["tune", "test", "all", "each"], default="each",
                    help="which part to run ('each' = tune, test and all; default)")
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--worst", type=int, default=15, help="how many worst fields to list")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="only the first N fields (quick runs)")
    args = ap.parse_args(argv)

    data = Path(args.data)
    jpgs = sorted((data / "JPEGImages").glob("*.jpg"))
    if not jpgs:
        print(f"no images under {data}/JPEGImages", file=sys.stderr)
        return 2
    fields = []
    for j in jpgs:
        xml = data / "Annotations" / (j.stem + ".xml")
        if not xml.exists():
            continue
        fields.append(dict(stem=j.stem, jpg=j, gt=load_annotation(xml), split=split_of(j.stem)))
    if args.split in ("tune", "test"):
        fields = [f for f in fields if f["split"] == args.split]
    if args.limit:
        fields = fields[: args.limit]

    params = DetectionParams()
    print(f"data: {data}  fields: {len(fields)}  WBC boxes: {sum(len(f['gt']) for f in fields)}  "
          f"IoU >= {args.iou}  split seed: {SPLIT_SEED!r} (parameters tuned on 'tune' only)")
    print(f"params: {params}")

    detectors = {"detector": lambda im: detect_white_cells(im, params=params)}
    if not args.no_baseline:
        detectors["baseline"] = baseline_detect
    results = {name: evaluate(fields, fn, args.iou) for name, fn in detectors.items()}

    parts = ["tune", "test", "all"] if args.split == "each" else [args.split]
    hdr = f"{'method':<10} {'part':<5} {'boxes':<9} {'fields':>6} {'recall':>7} {'prec':>7} {'F1':>7} {'TP':>5} {'FP':>5} {'FN':>5} {'ms/field':>9}"
    print()
    print(hdr)
    print("-" * len(hdr))
    for part in parts:
        for name, recs in results.items():
            sub = recs if part == "all" else [r for r in recs if r["split"] == part]
            for interior in (False, True):
                c, t = summarise(sub, interior)
                label = "interior" if interior else "all"
                print(f"{name:<10} {part:<5} {label:<9} {len(sub):>6} {c.recall:>7.3f} {c.precision:>7.3f} {c.f1:>7.3f} "
                      f"{c.tp:>5} {c.fp:>5} {c.fn:>5} {1000 * t:>9.1f}")
        print()

    recs = results["detector"]
    n_other = sum(r["n_other"] for r in recs)
    print(f"detector: {n_other} smudge/artefact detections (not counted as WBC)")
    bad = [r for r in recs if r["fp"] or r["fn"]]
    bad.sort(key=lambda r: (-(r["fn"] + r["fp"]), r["stem"]))
    print(f"\nworst fields ({len(bad)} with an error; showing {min(args.worst, len(bad))}):")
    for r in bad[: args.worst]:
        ious = ",".join(f"{v:.2f}" for v in r["best_iou"])
        fps = ",".join(f"{s:.2f}" for s in r["fp_scores"])
        print(f"  {r['stem']}.jpg [{r['split']}] FN={r['fn']} FP={r['fp']} gt={r['n_gt']} "
              f"best IoU per GT=[{ious}] FP scores=[{fps}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
