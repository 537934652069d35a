"""Detection in large fields (e.g. 6000x4000 px scans) with overlapping tiles."""
from __future__ import annotations


from .core import (
    MIN_SIDE,
    Detection,
    DetectionParams,
    ImageLike,
    _detect,
    _resize_rgb,
    background_rgb,
    field_threshold,
    optical_density,
    to_rgb_array,
)
from .metrics import iou


def _overlap_min(a, b) -> float:
    """Intersection over the smaller box's area."""
    ix0, iy0 = max(a[0], b[0]), max(a[1], b[1])
    ix1, iy1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, ix1 - ix0) * max(0, iy1 - iy0)
    amin = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / amin if amin > 0 else 0.0


def nms(dets: list[Detection], iou_thr: float = 0.4, contain_thr: float = 0.7) -> list[Detection]:
    """Greedy non-maximum suppression by score (any kind).

    A detection is suppressed when it overlaps an already kept one with IoU >=
    ``iou_thr`` or when one is mostly contained in the other (intersection over
    the smaller area >= ``contain_thr``).  WBC detections win over other kinds.
    """
    order = sorted(dets, key=lambda d: (d.kind != "wbc", -d.score))
    kept: list[Detection] = []
    for d in order:
        if all(iou(d.box, k.box) < iou_thr and _overlap_min(d.box, k.box) < contain_thr for k in kept):
            kept.append(d)
    kept.sort(key=lambda d: -d.score)
    return kept


def _starts(n: int, tile: int, step: int) -> list[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, step))
    s.append(n - tile)
    return sorted(set(s))


def _cores(starts: list[int], tile: int, n: int) -> list[tuple[float, float]]:
    """Partition [0, n) into one core interval per tile: boundaries at the
    middle of each overlap."""
    bounds = [0.0]
    for a, b in zip(starts[:-1], starts[1:]):
        bounds.append((b + min(n, a + tile)) / 2.0)
    bounds.append(float(n) + 1.0)
    return list(zip(bounds[:-1], bounds[1:]))


def detect_in_large_field(
    image: ImageLike,
    *,
    tile: int = 1024,
    overlap: int = 256,
    params: DetectionParams | None = None,
) -> list[Detection]:
    """Detect white cells in a field of any size using overlapping tiles.

    Colour normalisation (background) and the stain threshold are computed
    once for the whole field, so every tile sees the same rules.  Each tile is
    processed by the single-field detector; a detection is kept only by the
    tile whose *core* (the tile minus half of each overlap with a neighbour)
    holds its nucleus centre, so each cell is owned by exactly one tile (as
    long as ``overlap`` is larger than a nucleus, the owning tile sees the whole
    nucleus); a final NMS removes any remaining duplicate.
    """
    p = params or DetectionParams()
    if tile < 64:
        raise ValueError("tile must be >= 64 px")
    if not 0 <= overlap < tile:
        raise ValueError("overlap must satisfy 0 <= overlap < tile")
    rgb = to_rgb_array(image)
    H, W = rgb.shape[:2]
    if min(H, W) < MIN_SIDE:
        return []
    bg = background_rgb(rgb)
    # Field-wide threshold on a reduced copy of the stain map.
    scale = min(1.0, p.work_cell_diameter / float(p.cell_diameter_px))
    small = _resize_rgb(rgb, scale)
    od = optical_density(small, bg)
    from scipy import ndimage as ndi

    stain = od[..., 0] - od[..., 2]
    if p.smooth_sigma > 0:
        stain = ndi.gaussian_filter(stain, p.smooth_sigma)
    thr = field_threshold(stain, p)
    del small, od, stain

    step = tile - overlap
    xs, ys = _starts(W, tile, step), _starts(H, tile, step)
    xcore, ycore = _cores(xs, tile, W), _cores(ys, tile, H)
    out: list[Detection] = []
    for (y0, (cy0, cy1)) in zip(ys, ycore):
        for (x0, (cx0, cx1)) in zip(xs, xcore):
            y1, x1 = min(H, y0 + tile), min(W, x0 + tile)
            sub = rgb[y0:y1, x0:x1]
            if min(sub.shape[:2]) < MIN_SIDE:
                continue
            for d in _detect(sub, bg, p, threshold=thr):
                # Ownership: the tile whose core holds the nucleus centre keeps it.
                nb = d.extra.get("nucleus_box", d.box)
                ncx = x0 + (nb[0] + nb[2]) / 2.0
                ncy = y0 + (nb[1] + nb[3]) / 2.0
                if not (cx0 <= ncx < cx1 and cy0 <= ncy < cy1):
                    continue
                extra = dict(d.extra)
                extra["nucleus_box"] = (nb[0] + x0, nb[1] + y0, nb[2] + x0, nb[3] + y0)
                extra["tile"] = (x0, y0, x1, y1)
                bx0, by0, bx1, by1 = d.box
                out.append(Detection(box=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), score=d.score, kind=d.kind, extra=extra))
    return nms(out)
