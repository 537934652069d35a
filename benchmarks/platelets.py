#!/usr/bin/env python
"""Benchmark of the platelet and red-cell counts (slides.detection.platelets) on bccd-dev.

Usage (from the repo root; also ``benchmarks/detection.py --platelets``)::

    .venv/bin/python benchmarks/platelets.py                 # tune, test and all
    .venv/bin/python benchmarks/platelets.py --split test

Protocol
--------
* Split: the white-cell benchmark's seeded hash of the file stem (``tune`` / ``test``).  The
  detector's parameters were chosen looking only at ``tune``; ``test`` is the held-out figure.
* Scale: each field's scale from its red cells (``scale.field_scale``), as the portal does; the
  white cells found by the portal's detector at that scale are left out (their granules and
  nuclei are not platelets).
* Platelets: every ``Platelets`` box; matching greedy by score, one-to-one, IoU >= 0.5; recall and
  precision over all boxes of the part (targets 0.85 / 0.85).
* Red cells: per field, |found - annotated| / annotated; the median over fields (target <= 10 %).
  BCCD's ``RBC`` boxes are incomplete in crowded fields (and sometimes duplicated), so a field's
  annotation is judged *complete* when its RBC and WBC boxes cover at least ``COMPLETE_COVER`` of
  the field's red-cell pixels (the stained, not purple mask of ``scale``); the median is printed
  for the complete fields (the figure the target is about) and for every field with an RBC box.
* Baseline in the same run (``fixed``): one stain threshold for every field (``FIXED_STAIN``), no
  hysteresis, the BCCD default size instead of the field's scale; red cells: one total-OD level
  (``FIXED_LEVEL``), connected components counted one each (no watershed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import in_part, parts_of, print_table_header  # noqa: E402
from benchmarks.detection import DEFAULT_DATA, SPLIT_SEED, load_annotation, load_fields, read_rgb  # noqa: E402
from slides.detection import detect_white_cells  # noqa: E402
from slides.detection import scale as scale_mod  # noqa: E402
from slides.detection.metrics import Counts, match  # noqa: E402
from slides.detection.platelets import (  # noqa: E402
    DEFAULT_RED_CELL_DIAMETER_PX, PlateletParams, RedCellParams, count_red_cells, detect_platelets,
    red_cell_mask,
)

TARGET_RECALL = TARGET_PRECISION = 0.85
TARGET_RBC_ERROR = 0.10
COMPLETE_COVER = 0.70
FIXED_STAIN = 0.10
FIXED_LEVEL = 0.15


def coverage(rgb, boxes) -> float:
    mask = red_cell_mask(rgb)
    covered = np.zeros_like(mask)
    for b in boxes:
        covered[b[1]:b[3], b[0]:b[2]] = True
    return float((mask & covered).sum()) / max(1, int(mask.sum()))


def run(fields):
    """One record per field: platelet matches and red-cell counts for both methods."""
    recs = []
    for f in fields:
        rgb = read_rgb(f["jpg"])
        sc = scale_mod.field_scale(rgb)
        d = scale_mod.RED_CELL_DIAMETER_UM / sc.microns_per_pixel
        wbc = [x.box for x in detect_white_cells(rgb, params=sc.params()) if x.kind == "wbc"]
        gt = f["platelets"]
        rec = dict(stem=f["stem"], split=f["split"], n_rbc=len(f["rbc"]),
                   cover=coverage(rgb, f["rbc"] + f["gt"]))
        methods = {
            "portal": (detect_platelets(rgb, params=PlateletParams(red_cell_diameter_px=d), exclude=wbc),
                       count_red_cells(rgb, params=RedCellParams(red_cell_diameter_px=d), exclude=wbc)),
            "fixed": (detect_platelets(rgb, params=PlateletParams(seed_stain=0.0), exclude=wbc,
                                       threshold=FIXED_STAIN),
                      count_red_cells(rgb, params=RedCellParams(red_cell_diameter_px=DEFAULT_RED_CELL_DIAMETER_PX,
                                                                stack_area=1e9),
                                      exclude=wbc, level=FIXED_LEVEL, split=False)),
        }
        for name, (plts, rbc) in methods.items():
            m, fp, fn = match([p.box for p in plts], [p.score for p in plts], gt, 0.5)
            rec[name] = dict(tp=len(m), fp=len(fp), fn=len(fn), rbc=rbc.count, clumps=sum(p.clump for p in plts))
        recs.append(rec)
    return recs


def rbc_error(recs, name, complete_only):
    errs = [abs(r[name]["rbc"] - r["n_rbc"]) / r["n_rbc"] for r in recs
            if r["n_rbc"] and (r["cover"] >= COMPLETE_COVER or not complete_only)]
    return (float(np.median(errs)) if errs else float("nan")), len(errs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split", choices=["tune", "test", "all", "each"], default="each")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "JPEGImages").is_dir():
        print(f"no images under {data}/JPEGImages", file=sys.stderr)
        return 2
    fields = load_fields(data, args.limit)
    for f in fields:
        f["platelets"] = load_annotation(data / "Annotations" / (f["stem"] + ".xml"), "Platelets")
    if args.split in ("tune", "test"):
        fields = [f for f in fields if f["split"] == args.split]
    parts = parts_of(args.split)
    print(f"data: {data}  fields: {len(fields)}  platelet boxes: {sum(len(f['platelets']) for f in fields)}  "
          f"RBC boxes: {sum(len(f['rbc']) for f in fields)}  split seed: {SPLIT_SEED!r} (tuned on 'tune' only)")
    print(f"platelet params: {PlateletParams()}")
    print(f"red-cell params: {RedCellParams()}")
    recs = run(fields)
    hdr = (f"{'method':<7} {'part':<5} {'fields':>6} {'plt recall':>10} {'plt prec':>9} {'TP':>4} {'FP':>4} {'FN':>4} "
           f"{'RBC err complete':>17} {'n':>4} {'RBC err all':>12} {'n':>4}")
    print_table_header(hdr)
    verdict = []
    for part in parts:
        sub = in_part(recs, part)
        for name in ("portal", "fixed"):
            c = Counts()
            for r in sub:
                c.add(r[name]["tp"], r[name]["fp"], r[name]["fn"])
            ec, nc = rbc_error(sub, name, True)
            ea, na = rbc_error(sub, name, False)
            print(f"{name:<7} {part:<5} {len(sub):>6} {c.recall:>10.3f} {c.precision:>9.3f} {c.tp:>4} {c.fp:>4} "
                  f"{c.fn:>4} {100 * ec:>16.1f}% {nc:>4} {100 * ea:>11.1f}% {na:>4}")
            if name == "portal" and part == "test":
                verdict = [f"platelet recall {c.recall:.3f} (target {TARGET_RECALL})",
                           f"precision {c.precision:.3f} (target {TARGET_PRECISION})",
                           f"red cells median |error| {100 * ec:.1f} % on complete fields (target "
                           f"{100 * TARGET_RBC_ERROR:.0f} %)"]
    print()
    print(f"complete = RBC+WBC boxes cover >= {COMPLETE_COVER:.0%} of the field's red-cell pixels; "
          f"{sum(r['cover'] >= COMPLETE_COVER for r in recs)} of {len(recs)} fields")
    if verdict:
        print("held-out (test), portal method: " + "; ".join(verdict))
    print(f"fields with a platelet clump (portal): {sum(1 for r in recs if r['portal']['clumps'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
