#!/usr/bin/env python
"""Benchmark of the white-cell detector (slides.detection) on bccd-dev, at several magnifications.

Usage (from the repo root)::

    .venv/bin/python benchmarks/detection.py                      # every scale, tune + test + all
    .venv/bin/python benchmarks/detection.py --scales 1 --split test
    .venv/bin/python benchmarks/detection.py --calibrate          # the scale constants, from 'tune'
    .venv/bin/python benchmarks/detection.py --data /path/to/bccd-like --worst 20

Protocol
--------
* Ground truth: every ``WBC`` box of the Pascal VOC annotation (duplicates,
  tiny mislabelled boxes and border cells included: nothing is cleaned).
* Magnifications: each field is resampled (Lanczos) to 0.5x, 0.75x, 1x, 1.5x and
  2x its size, its boxes scaled with it: the same cells as a lab with another
  camera or objective would see them.
* Predictions: detections of kind ``"wbc"`` (``smudge`` / ``artefact`` are not
  leukocytes; they are counted separately).
* Matching: greedy by score, one-to-one, IoU >= 0.5 (``--iou``).
* Methods, measured in the same run:
  - ``scaled``: the portal's detector -- each field's scale estimated from its
    red cells (slides.detection.scale), the detector's sizes set from it;
  - ``fixed`` (baseline): the same detector with its fixed default sizes (a
    white cell about 200 px across, BCCD-like), i.e. the detector before the
    scale estimate.
* Split: a seeded hash of the file stem puts each field in ``tune`` (about half) or
  ``test``.  The detector's parameters and the scale constants were chosen
  looking ONLY at the ``tune`` part (``--calibrate`` recomputes the constants
  from it); ``test`` is the honest figure.  ``all`` is both together.
* Secondary figure (``--interior``): GT boxes touching the image border
  (within 2 px) are set to *ignore* -- a detection matching one is neither TP
  nor FP, and an unmatched detection touching the border is not an FP --
  because BCCD annotates truncated border cells inconsistently.

Data: Shenggan/BCCD_Dataset (MIT licence), see README.md in the shared data folder (LEUKO_SHARED_DATA, else ../shared/data beside the checkout).
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

from benchmarks.common import SHARED, in_part, parts_of, print_table_header  # noqa: E402
from slides.detection import DetectionParams, detect_white_cells  # noqa: E402
from slides.detection import scale as scale_mod  # noqa: E402
from slides.detection.metrics import Counts, iou, match  # noqa: E402

DEFAULT_DATA = os.environ.get("LEUKO_BCCD_DIR", str(SHARED / "bccd-dev"))
SPLIT_SEED = "leukoportal-detection-v1"
BORDER_TOL = 2
SCALES = (0.5, 0.75, 1.0, 1.5, 2.0)
TARGET_RECALL, TARGET_PRECISION = 0.95, 0.93


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


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))


def touches_border(box, w, h, tol=BORDER_TOL) -> bool:
    return box[0] <= tol or box[1] <= tol or box[2] >= w - tol or box[3] >= h - tol


def fixed_detect(rgb):
    return detect_white_cells(rgb, params=DetectionParams())


def scaled_detect(rgb):
    return detect_white_cells(rgb, params=scale_mod.field_scale(rgb).params())


def evaluate(fields, detector, iou_thr: float, factor: float):
    """Run ``detector`` on each field resampled by ``factor``; return per-field records."""
    recs = []
    for f in fields:
        rgb = rescale(read_rgb(f["jpg"]), factor)
        gt = [tuple(v * factor for v in g) for g in f["gt"]]
        t0 = time.perf_counter()
        dets = detector(rgb)
        dt = time.perf_counter() - t0
        wbc = [d for d in dets if d.kind == "wbc"]
        pb = [d.box for d in wbc]
        ps = [d.score for d in wbc]
        m, fp, fn = match(pb, ps, gt, iou_thr)
        h, w = rgb.shape[:2]
        border_gt = {j for j, g in enumerate(gt) if touches_border(g, w, h, BORDER_TOL * max(1.0, factor))}
        recs.append(dict(
            stem=f["stem"], split=f["split"], time=dt, tp=len(m), fp=len(fp), fn=len(fn),
            i_tp=sum(1 for (_, j, _) in m if j not in border_gt), i_fn=sum(1 for j in fn if j not in border_gt),
            i_fp=sum(1 for i in fp if not touches_border(pb[i], w, h, BORDER_TOL * max(1.0, factor))),
            n_other=len(dets) - len(wbc), n_gt=len(gt), fp_scores=[ps[i] for i in fp],
            best_iou=[max([iou(p, g) for p in pb] or [0.0]) for g in gt],
        ))
    return recs


def summarise(recs, interior=False):
    c = Counts()
    for r in recs:
        c.add(*((r["i_tp"], r["i_fp"], r["i_fn"]) if interior else (r["tp"], r["fp"], r["fn"])))
    return c, (float(np.mean([r["time"] for r in recs])) if recs else 0.0)


def load_fields(data: Path, limit: int = 0):
    fields = []
    for j in sorted((data / "JPEGImages").glob("*.jpg")):
        xml = data / "Annotations" / (j.stem + ".xml")
        if not xml.exists():
            continue
        fields.append(dict(stem=j.stem, jpg=j, gt=load_annotation(xml), split=split_of(j.stem),
                           rbc=load_annotation(xml, "RBC")))
    return fields[:limit] if limit else fields


def calibrate(fields, iou_thr: float = 0.5) -> int:
    """The scale module's two constants, from the tune split only: the factor from the red-cell
    mask's median thickness to the annotated red-cell size, then the leukocyte size (um) whose
    detector scores the best F1 on the tune fields at 1x (each field at its own measured scale)."""
    tune = [f for f in fields if f["split"] == "tune"]
    ratios, mpps, measured = [], [], {}
    for f in tune:
        rgb = read_rgb(f["jpg"])
        h, w = rgb.shape[:2]
        measured[f["stem"]] = scale_mod.red_cell_diameter(rgb)
        inner = [b for b in f["rbc"] if not touches_border(b, w, h)]
        if not inner or measured[f["stem"]] is None:
            continue
        annotated = float(np.median([((b[2] - b[0]) + (b[3] - b[1])) / 2 for b in inner]))
        ratios.append(annotated / (measured[f["stem"]] / scale_mod.THICKNESS_TO_DIAMETER))
        mpps.append(scale_mod.RED_CELL_DIAMETER_UM / annotated)
    k = float(np.median(ratios))
    print(f"tune fields with annotated red cells: {len(ratios)}")
    print(f"THICKNESS_TO_DIAMETER = {k:.3f}   (now {scale_mod.THICKNESS_TO_DIAMETER}; annotated red-cell box / "
          "median thickness)")
    physical = scale_mod.DEFAULT_CELL_DIAMETER_PX * float(np.median(mpps))
    print(f"the detector's {scale_mod.DEFAULT_CELL_DIAMETER_PX:.0f} px at the tune split's median scale "
          f"({np.median(mpps):.4f} um/px): {physical:.2f} um")
    best = None
    for cell_um in np.round(np.arange(13.7, 16.25, 0.3), 2):
        c = Counts()
        for f in tune:
            rgb = read_rgb(f["jpg"])
            d = measured[f["stem"]]
            mpp = scale_mod.RED_CELL_DIAMETER_UM / d if d else scale_mod.DEFAULT_MICRONS_PER_PIXEL
            dets = [x for x in detect_white_cells(rgb, params=DetectionParams(cell_diameter_px=cell_um / mpp))
                    if x.kind == "wbc"]
            m, fp, fn = match([x.box for x in dets], [x.score for x in dets], f["gt"], iou_thr)
            c.add(len(m), len(fp), len(fn))
        print(f"  leukocyte {cell_um:5.2f} um: recall {c.recall:.3f} precision {c.precision:.3f} F1 {c.f1:.4f}")
        key = (round(c.f1, 6), -abs(cell_um - physical))
        if best is None or key > best[0]:
            best = (key, cell_um)
    print(f"DETECTOR_CELL_DIAMETER_UM = {best[1]}   (now {scale_mod.DETECTOR_CELL_DIAMETER_UM}; best tune F1, "
          "ties to the closest to the physical size)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="BCCD-like folder (JPEGImages/ + Annotations/)")
    ap.add_argument("--split", choices=["tune", "test", "all", "each"], default="each",
                    help="which part to report ('each' = tune, test and all; default)")
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="magnifications (default: all five)")
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--worst", type=int, default=10, help="how many worst fields (scaled detector, 1x) to list")
    ap.add_argument("--interior", action="store_true", help="also print the figure without border cells")
    ap.add_argument("--no-baseline", action="store_true", help="skip the fixed-scale baseline")
    ap.add_argument("--limit", type=int, default=0, help="only the first N fields (quick runs)")
    ap.add_argument("--calibrate", action="store_true", help="print the scale constants fitted on 'tune' and stop")
    ap.add_argument("--platelets", action="store_true",
                    help="the platelet and red-cell benchmark instead (benchmarks/platelets.py)")
    args = ap.parse_args(argv)
    if args.platelets:
        from benchmarks import platelets

        return platelets.main(["--data", args.data, "--split", args.split] + (["--limit", str(args.limit)]
                                                                            if args.limit else []))

    data = Path(args.data)
    if not (data / "JPEGImages").is_dir():
        print(f"no images under {data}/JPEGImages", file=sys.stderr)
        return 2
    fields = load_fields(data, args.limit)
    if args.calibrate:
        return calibrate(fields)
    if args.split in ("tune", "test"):
        fields = [f for f in fields if f["split"] == args.split]

    print(f"data: {data}  fields: {len(fields)}  WBC boxes: {sum(len(f['gt']) for f in fields)}  "
          f"IoU >= {args.iou}  split seed: {SPLIT_SEED!r} (parameters tuned on 'tune' only)")
    print(f"detector params: {DetectionParams()}")
    print(f"scale: red cell {scale_mod.RED_CELL_DIAMETER_UM} um, thickness->diameter "
          f"{scale_mod.THICKNESS_TO_DIAMETER}, detector cell {scale_mod.DETECTOR_CELL_DIAMETER_UM} um")

    detectors = {"scaled": scaled_detect}
    if not args.no_baseline:
        detectors["fixed"] = fixed_detect
    parts = parts_of(args.split)
    results = {}
    for factor in args.scales:
        for name, fn in detectors.items():
            results[(factor, name)] = evaluate(fields, fn, args.iou, factor)

    hdr = (f"{'scale':>5} {'method':<7} {'part':<5} {'boxes':<8} {'fields':>6} {'recall':>7} {'prec':>7} {'F1':>6} "
           f"{'TP':>5} {'FP':>5} {'FN':>5} {'ms/field':>9}")
    print_table_header(hdr)
    misses = []
    for factor in args.scales:
        for part in parts:
            for name in detectors:
                recs = results[(factor, name)]
                sub = in_part(recs, part)
                for interior in ((False, True) if args.interior else (False,)):
                    c, t = summarise(sub, interior)
                    print(f"{factor:>5.2f} {name:<7} {part:<5} {'interior' if interior else 'all':<8} {len(sub):>6} "
                          f"{c.recall:>7.3f} {c.precision:>7.3f} {c.f1:>6.3f} {c.tp:>5} {c.fp:>5} {c.fn:>5} "
                          f"{1000 * t:>9.1f}")
                    if name == "scaled" and not interior and part in ("test", "all") and (
                            c.recall < TARGET_RECALL or c.precision < TARGET_PRECISION):
                        misses.append(f"{factor}x {part}: recall {c.recall:.3f}, precision {c.precision:.3f}")
        print()
    print(f"targets (scaled detector, every scale): recall >= {TARGET_RECALL}, precision >= {TARGET_PRECISION}: "
          + ("met" if not misses else "NOT met -- " + "; ".join(misses)))

    if (1.0, "scaled") in results:
        recs = results[(1.0, "scaled")]
        print(f"scaled detector at 1x: {sum(r['n_other'] for r in recs)} smudge/artefact detections (not counted as WBC)")
        bad = sorted((r for r in recs if r["fp"] or r["fn"]), key=lambda r: (-(r["fn"] + r["fp"]), r["stem"]))
        print(f"\nworst fields at 1x ({len(bad)} with an error; showing {min(args.worst, len(bad))}):")
        for r in bad[: args.worst]:
            ious = ",".join(f"{v:.2f}" for v in r["best_iou"])
            fps = ",".join(f"{s:.2f}" for s in r["fp_scores"])
            print(f"  {r['stem']}.jpg [{r['split']}] FN={r['fn']} FP={r['fp']} gt={r['n_gt']} "
                  f"best IoU per GT=[{ious}] FP scores=[{fps}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
