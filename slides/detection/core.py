"""White-cell (leukocyte) detection in stained blood-smear fields.

Pure numpy / scipy / scikit-image; no trained weights, no Django.

Method (see ``detect_white_cells``):

1. Colour normalisation: the field is white-balanced on its own bright
   background (per-channel median of the brightest pixels) and converted to
   optical density (OD = -log10(I / I0)).
2. Nucleus stain map: ``OD_red - OD_blue``.  Romanowsky-type stains
   (May-Grunwald-Giemsa, Wright, Leishman...) make leukocyte nuclei blue-purple
   (they absorb red light strongly, little blue), red cells pink (absorb
   green/blue, little red) and the background neutral, so the map is strongly
   positive on nuclei, ~0 on background and negative on red cells.
3. Adaptive threshold: Otsu per field computed over the "purple candidate"
   pixels (stain > ``stain_floor``), clamped to ``[stain_threshold_min,
   stain_threshold_max]`` so that a field without any white cell does not get
   a threshold that picks background or red-cell texture.
4. Morphology at a working resolution (field rescaled so that a leukocyte is
   ``work_cell_diameter`` px): opening removes specks; a connected blob too
   big for one nucleus is split by a distance-transform watershed (touching
   nuclei of two cells); then fragments (lobes of a segmented / eosinophil
   nucleus) closer than ``group_gap`` are grouped (union-find, closest pairs
   first) as long as the group fits in ``max_nucleus_extent`` and the two
   parts are not both whole, compact nuclei (two cells side by side).
5. Nucleus groups smaller than ``min_nucleus_area`` (platelets, debris) are
   dropped; the rest is classified ``wbc`` / ``smudge`` / ``artefact`` by
   conservative shape and stain rules (see ``_classify``) and scored.
6. Whole-cell box: the nucleus is grown into the connected cytoplasm
   candidates (not background, not pink; levels measured on the field's own
   background and red cells) inside a window of ``cell_growth`` around the
   nucleus, after a small opening that cuts bridges to neighbours.  Optional
   ``box_margin``.

All sizes scale with ``DetectionParams.cell_diameter_px`` (default 200 px,
i.e. BCCD-like 640x480 fields of a x100 objective).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

ImageLike = Union[np.ndarray, Image.Image]

KINDS = ("wbc", "smudge", "artefact")


@dataclass
class Detection:
    """One detected object in field pixel coordinates.

    ``box`` is (x0, y0, x1, y1), x1/y1 exclusive-ish (like Pascal VOC xmax/ymax),
    always clipped to the field.  ``kind`` is ``"wbc"`` for a leukocyte to be
    counted, ``"smudge"`` (smudge/basket cell) or ``"artefact"`` for stained
    objects kept as their own class but not counted as leukocytes.
    """

    box: tuple[int, int, int, int]
    score: float
    kind: str = "wbc"
    # Optional extra measurements (nucleus box, area...); not part of equality.
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)

    @property
    def is_leukocyte(self) -> bool:
        return self.kind == "wbc"


@dataclass(frozen=True)
class DetectionParams:
    """Tunable parameters.  Sizes are in *field* pixels unless noted.

    ``cell_diameter_px`` is the expected diameter of a typical leukocyte in the
    input image; every size-related rule is relative to it, so images at a
    different magnification only need this one value changed (default: ~x100
    oil field imaged at 640x480, as in BCCD).
    """

    cell_diameter_px: float = 200.0
    # Processing resolution: the field is rescaled so a leukocyte is this many px.
    work_cell_diameter: float = 64.0
    # Stain threshold (OD_red - OD_blue): Otsu per field, clamped to this window.
    stain_threshold_min: float = 0.08
    stain_threshold_max: float = 0.20
    # Otsu is computed only over "purple candidate" pixels above this floor.
    stain_floor: float = 0.02
    # Pre-smoothing of the stain map (working pixels).
    smooth_sigma: float = 1.0
    # Lobe grouping: fragments closer than this (fraction of diameter) are one nucleus...
    group_gap: float = 0.35
    # ...as long as the group fits in this extent (fraction of diameter).
    max_nucleus_extent: float = 1.15
    # Fragments smaller than this (fraction of the disc area) do not take part in grouping.
    min_fragment_area: float = 0.02
    # Two fragments both at least this big (fraction of disc area) and compact are
    # two whole nuclei (two cells side by side), never lobes of one: not merged.
    whole_nucleus_area: float = 0.22
    # Minimum nucleus area, as a fraction of the area of a disc of cell diameter.
    min_nucleus_area: float = 0.09
    # ...relaxed by this factor for objects cut by the field border.
    border_area_factor: float = 0.67
    # Watershed split: minimal distance between two cell centres (fraction of diameter).
    split_min_distance: float = 0.45
    # Whole-cell box: maximal growth around the nucleus (fraction of cell diameter).
    cell_growth: float = 0.30
    # Cytoplasm candidates: total OD above bg + frac*(red cell OD - bg), and stain
    # above frac*(red-cell stain level) (i.e. not pink).
    cyto_od_frac: float = 0.20
    cyto_stain_frac: float = 0.5
    # Opening radius (fraction of diameter) cutting bridges between the cell and neighbours.
    cell_open_radius: float = 0.06
    # Extra margin added around the final box (fraction of box size); 0 = tight.
    box_margin: float = 0.0
    # Minimum score to report a detection.
    min_score: float = 0.30
    # Also report smudge / artefact detections.
    keep_non_wbc: bool = True

    def with_(self, **kw) -> "DetectionParams":
        return replace(self, **kw)


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------

MIN_SIDE = 8


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array.

    Accepts PIL images of any mode, and numpy arrays: HxW (grey), HxWx1,
    HxWx3 (RGB), HxWx4 (RGBA; composited over white).  Float arrays are taken
    as [0, 1] when their maximum is <= 1, else [0, 255]; uint16 is scaled.
    Raises ``ValueError`` for anything else (wrong rank, empty, NaN...).
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            bg = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(bg, image.convert("RGBA"))
        arr = np.asarray(image.convert("RGB"))
        if arr.size == 0:
            raise ValueError("empty image")
        return arr
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array or a PIL image, got {type(image).__name__}")
    arr = image
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("empty image")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        a = arr.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError("image contains NaN or infinite values")
        if a.max(initial=0) <= 1.0:
            a = a * 255.0
        arr = np.clip(a, 0, 255).round().astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        rgb = arr[..., :3].astype(np.float32)
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (rgb * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------
# Colour features
# ---------------------------------------------------------------------------


def background_rgb(rgb: np.ndarray) -> np.ndarray:
    """Estimate the (bright) background colour: per-channel median of the
    brightest 15 % of pixels."""
    flat = rgb.reshape(-1, 3).astype(np.float32)
    if flat.shape[0] > 200_000:  # subsample for speed on large fields
        flat = flat[:: flat.shape[0] // 200_000 + 1]
    grey = flat.sum(1)
    thr = np.percentile(grey, 85)
    bright = flat[grey >= thr]
    bg = np.median(bright, axis=0)
    return np.maximum(bg, 1.0)


def optical_density(rgb: np.ndarray, bg: np.ndarray | None = None) -> np.ndarray:
    """OD per channel relative to the background (white-balanced), float32."""
    if bg is None:
        bg = background_rgb(rgb)
    a = np.maximum(rgb.astype(np.float32), 1.0) / bg.astype(np.float32)
    od = -np.log10(np.minimum(a, 1.0))
    return od


def stain_map(rgb: np.ndarray, bg: np.ndarray | None = None) -> np.ndarray:
    """Nucleus stain map OD_red - OD_blue (>0 on blue/purple nuclei)."""
    od = optical_density(rgb, bg)
    return od[..., 0] - od[..., 2]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _disk(r: float) -> np.ndarray:
    r = max(0, int(round(r)))
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r + 1e-9


def _otsu(values: np.ndarray, nbins: int = 256) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return lo
    hist, edges = np.histogram(values, bins=nbins, range=(lo, hi))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centers) / np.maximum(w1, 1e-12)
    m2 = (np.cumsum((hist * centers)[::-1]) / np.maximum(np.cumsum(hist[::-1]), 1e-12))[::-1]
    var = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centers[:-1][int(np.argmax(var))])


def _resize_float(a: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-6:
        return a
    h, w = a.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if a.ndim == 2:
        return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((nw, nh), Image.BILINEAR))
    return np.stack([_resize_float(a[..., c], scale) for c in range(a.shape[2])], axis=-1)


def _resize_rgb(rgb: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-6:
        return rgb
    h, w = rgb.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    resample = Image.BILINEAR if scale > 1 else Image.BOX
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), resample))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


def detect_white_cells(image: ImageLike, *, params: DetectionParams | None = None) -> list[Detection]:
    """Detect leukocytes in one smear field.

    Returns detections sorted by decreasing score.  Boxes are whole-cell boxes
    in the input's pixel coordinates, clipped to the field.  Images smaller than
    8 px on a side return ``[]``; invalid inputs raise ``ValueError``.
    """
    p = params or DetectionParams()
    rgb = to_rgb_array(image)
    H, W = rgb.shape[:2]
    if min(H, W) < MIN_SIDE:
        return []
    bg = background_rgb(rgb)
    return _detect(rgb, bg, p)


def _detect(rgb: np.ndarray, bg: np.ndarray, p: DetectionParams, *, threshold: float | None = None) -> list[Detection]:
    H, W = rgb.shape[:2]
    scale = min(1.0, p.work_cell_diameter / float(p.cell_diameter_px))
    small = _resize_rgb(rgb, scale)
    h, w = small.shape[:2]
    sx, sy = W / w, H / h  # working -> field
    D = p.cell_diameter_px * scale  # cell diameter in working px

    od = optical_density(small, bg)
    stain = od[..., 0] - od[..., 2]
    total = od.sum(axis=2)
    if p.smooth_sigma > 0:
        stain = ndi.gaussian_filter(stain, p.smooth_sigma)
        total = ndi.gaussian_filter(total, p.smooth_sigma)

    if threshold is None:
        threshold = field_threshold(stain, p)
    mask = stain > threshold
    if not mask.any():
        return []
    # Clean small specks.
    mask = ndi.binary_opening(mask, structure=_disk(max(1.0, 0.02 * D)))
    if not mask.any():
        return []

    disc_area = np.pi * (D / 2) ** 2
    # Nucleus fragments; over-large blobs (touching nuclei) split by watershed,
    # then lobes of one nucleus grouped (union-find under a size constraint).
    frags, _ = ndi.label(mask)
    frags = _split_touching(frags, D, p)
    labels = _group_fragments(frags, D, p, min_frag_area=p.min_fragment_area * disc_area)

    # Cytoplasm candidates for whole-cell growth: stained (not background) and
    # not pink (not a red cell).  Levels are measured on this field.
    cyto = _cytoplasm_mask(stain, total, threshold, p)

    min_area = p.min_nucleus_area * disc_area
    dets: list[Detection] = []
    objs = ndi.find_objects(labels)
    for lab, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        nuc = labels[sl] == lab
        area = float(nuc.sum())
        if area < 0.25 * min_area:
            continue  # specks (platelets, dust): not reported at all
        ys, xs = np.nonzero(nuc)
        ys = ys + sl[0].start
        xs = xs + sl[1].start
        on_border = xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1
        if area < (p.border_area_factor * min_area if on_border else min_area):
            continue  # small purple object: platelet (clump) or debris
        feats = _features(nuc, stain[sl], total[sl], threshold, area, disc_area)
        box_w = _cell_box(xs, ys, labels, lab, cyto, D, p)
        nbox_area = float((xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min()))
        feats["cell_to_nucleus"] = (box_w[2] - box_w[0]) * (box_w[3] - box_w[1]) / max(1.0, nbox_area)
        kind, score = _classify(feats, p)
        x0, y0, x1, y1 = box_w
        fx0 = int(np.floor(x0 * sx))
        fy0 = int(np.floor(y0 * sy))
        fx1 = int(np.ceil(x1 * sx))
        fy1 = int(np.ceil(y1 * sy))
        if p.box_margin > 0:
            mx = p.box_margin * (fx1 - fx0)
            my = p.box_margin * (fy1 - fy0)
            fx0, fy0, fx1, fy1 = int(fx0 - mx), int(fy0 - my), int(np.ceil(fx1 + mx)), int(np.ceil(fy1 + my))
        fx0, fy0 = max(0, fx0), max(0, fy0)
        fx1, fy1 = min(W, fx1), min(H, fy1)
        if fx1 <= fx0 or fy1 <= fy0:
            continue
        nb = (
            int(np.floor(xs.min() * sx)),
            int(np.floor(ys.min() * sy)),
            min(W, int(np.ceil((xs.max() + 1) * sx))),
            min(H, int(np.ceil((ys.max() + 1) * sy))),
        )
        feats["nucleus_box"] = nb
        feats["nucleus_area_px"] = area * sx * sy
        feats["threshold"] = threshold
        if score < p.min_score:
            continue
        if kind != "wbc" and not p.keep_non_wbc:
            continue
        dets.append(Detection(box=(fx0, fy0, fx1, fy1), score=round(score, 4), kind=kind, extra=feats))
    dets.sort(key=lambda d: -d.score)
    return dets


def field_threshold(stain: np.ndarray, p: DetectionParams) -> float:
    """Per-field Otsu threshold on the stain map, clamped to the params window."""
    v = stain.ravel()
    if v.size > 200_000:
        v = v[:: v.size // 200_000 + 1]
    v = v[v > p.stain_floor]
    if v.size < 16:
        return float(p.stain_threshold_max)
    t = _otsu(v)
    return float(np.clip(t, p.stain_threshold_min, p.stain_threshold_max))


def _split_touching(frags: np.ndarray, D: float, p: DetectionParams) -> np.ndarray:
    """Split connected nucleus blobs that are too big for one cell (touching
    nuclei of two cells) by a distance-transform watershed."""
    from skimage.segmentation import watershed
    from skimage.feature import peak_local_max

    out = np.zeros_like(frags)
    next_lab = 1
    max_ext = p.max_nucleus_extent * D
    for lab, sl in enumerate(ndi.find_objects(frags), start=1):
        if sl is None:
            continue
        comp = frags[sl] == lab
        ext = max(comp.shape)
        if ext <= max_ext:
            out[sl][comp] = next_lab
            next_lab += 1
            continue
        dist = ndi.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
        dist = ndi.gaussian_filter(dist, 1.0)
        peaks = peak_local_max(
            dist,
            min_distance=max(2, int(p.split_min_distance * D)),
            threshold_abs=0.15 * D,
            labels=comp.astype(int),
            exclude_border=False,
        )
        if len(peaks) <= 1:
            out[sl][comp] = next_lab
            next_lab += 1
            continue
        markers = np.zeros(comp.shape, dtype=np.int32)
        for k, (r, c) in enumerate(peaks, start=1):
            markers[r, c] = k
        ws = watershed(-dist, markers, mask=comp)
        for k in range(1, len(peaks) + 1):
            m = ws == k
            if m.any():
                out[sl][m] = next_lab
                next_lab += 1
    return out


def _solidity(m: np.ndarray) -> float:
    from skimage.measure import regionprops

    return float(regionprops(m.astype(np.uint8))[0].solidity)


def _group_fragments(frags: np.ndarray, D: float, p: DetectionParams, *, min_frag_area: float) -> np.ndarray:
    """Group nucleus fragments (lobes) that belong to one cell.

    Fragments closer than ``group_gap * D`` are merged, closest pairs first, as
    long as the merged group still fits in ``max_nucleus_extent * D`` (so two
    neighbouring cells are not merged).  Fragments smaller than
    ``min_frag_area`` that join no group stay alone (and are later dropped as
    specks if too small).
    """
    objs = ndi.find_objects(frags)
    ids = [i + 1 for i, sl in enumerate(objs) if sl is not None]
    if len(ids) <= 1:
        return frags
    gap = p.group_gap * D
    max_ext = p.max_nucleus_extent * D
    boxes = {}
    areas = {}
    for i in ids:
        sl = objs[i - 1]
        boxes[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
        areas[i] = int((frags[sl] == i).sum())
    disc_area = np.pi * (D / 2) ** 2
    whole = {i for i in ids if areas[i] >= p.whole_nucleus_area * disc_area and _solidity(frags[objs[i - 1]] == i) >= 0.9}
    # candidate pairs by bbox gap, then exact pixel distance
    pairs = []
    big = [i for i in ids if areas[i] >= min_frag_area]
    for ai, i in enumerate(big):
        bi = boxes[i]
        for j in big[ai + 1 :]:
            if i in whole and j in whole:
                continue
            bj = boxes[j]
            dy = max(0, max(bi[0], bj[0]) - min(bi[2], bj[2]))
            dx = max(0, max(bi[1], bj[1]) - min(bi[3], bj[3]))
            if dx > gap or dy > gap:
                continue
            y0, x0 = min(bi[0], bj[0]), min(bi[1], bj[1])
            y1, x1 = max(bi[2], bj[2]), max(bi[3], bj[3])
            win = frags[y0:y1, x0:x1]
            dt = ndi.distance_transform_edt(win != i)
            dmin = float(dt[win == j].min())
            if dmin <= gap:
                pairs.append((dmin, i, j))
    if not pairs:
        return frags
    parent = {i: i for i in ids}
    gbox = dict(boxes)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for dmin, i, j in sorted(pairs):
        ri, rj = find(i), find(j)
        if ri == rj:
            continue
        bi, bj = gbox[ri], gbox[rj]
        mb = (min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3]))
        if max(mb[2] - mb[0], mb[3] - mb[1]) > max_ext:
            continue
        parent[rj] = ri
        gbox[ri] = mb
    lut = np.zeros(int(frags.max()) + 1, dtype=np.int32)
    roots = {}
    for i in ids:
        r = find(i)
        if r not in roots:
            roots[r] = len(roots) + 1
        lut[i] = roots[r]
    return lut[frags]


def _cytoplasm_mask(stain: np.ndarray, total: np.ndarray, threshold: float, p: DetectionParams) -> np.ndarray:
    """Pixels that may be leukocyte cytoplasm: not background, not pink."""
    # Red cells + background = the non-purple pixels; Otsu on their total OD
    # separates the two (background is ~0 after white balance).
    non_purple = stain < 0.5 * threshold
    v = total[non_purple]
    v = v[:: max(1, v.size // 100_000)]
    t_fg = _otsu(v) if v.size > 16 else 0.1
    rbc_px = non_purple & (total > t_fg)
    bg_px = non_purple & ~rbc_px
    bg_level = float(np.median(total[bg_px])) if bg_px.sum() > 50 else 0.0
    if rbc_px.sum() > 50:
        rbc_tot = float(np.median(total[rbc_px]))
        rbc_stain = float(np.median(stain[rbc_px]))
    else:
        rbc_tot, rbc_stain = 0.3, -0.05
    od_min = bg_level + p.cyto_od_frac * max(0.02, rbc_tot - bg_level)
    stain_min = min(0.0, p.cyto_stain_frac * rbc_stain)
    return (total > od_min) & (stain > stain_min)


def _features(nuc, stain, total, threshold, area, disc_area) -> dict:
    from skimage.measure import regionprops

    vals = stain[nuc]
    rp = regionprops(nuc.astype(np.uint8))[0]
    return {
        "area_rel": area / disc_area,
        "stain_mean": float(vals.mean()),
        "stain_p90": float(np.percentile(vals, 90)),
        "stain_rel": float(np.percentile(vals, 90) / max(threshold, 1e-6)),
        "stain_cv": float(vals.std() / max(abs(vals.mean()), 1e-6)),
        "solidity": float(rp.solidity),
        "eccentricity": float(rp.eccentricity),
        "extent": float(rp.extent),
        "od_mean": float(total[nuc].mean()),
    }


def _classify(f: dict, p: DetectionParams):
    """Return (kind, score) for a nucleus-sized stained object.

    Conservative rules (a leukocyte is never demoted unless the evidence is
    strong; smudge / artefact are reported but not counted):

    * ``artefact``: far too big for one cell (> 1.6x the disc of a cell
      diameter: stain precipitate, thick clump), or a thin, elongated, very
      non-convex string of specks (platelet strings, fibres).
    * ``smudge``: a large, pale, smooth nuclear smear without cytoplasm
      (box barely larger than the stained area) -- a smudge/basket cell.
    * otherwise ``wbc``.

    Score: mean of a stain-strength term (how far above the field threshold the
    nucleus is) and a size-plausibility term, in [0, 1].
    """
    a = f["area_rel"]
    s_contrast = _sigmoid((f["stain_rel"] - 1.4) / 0.2)
    s_size = _sigmoid((a - 0.10) / 0.03)
    score = 0.5 * s_contrast + 0.5 * s_size
    if a > 1.6:
        return "artefact", score
    if f["eccentricity"] > 0.97 and f["solidity"] < 0.5:
        return "artefact", score
    if a > 0.45 and f["stain_rel"] < 1.25 and f["stain_cv"] < 0.25 and f["cell_to_nucleus"] < 1.15:
        return "smudge", score
    return "wbc", score


def _cell_box(xs, ys, labels, lab, cyto, D, p: DetectionParams):
    """Whole-cell box (working coordinates) grown from one nucleus group.

    The cell = nucleus + cytoplasm-candidate pixels connected to it, inside a
    window of the nucleus box grown by ``cell_growth * D``; other nuclei are
    excluded; a small opening cuts thin bridges to neighbouring objects.
    """
    h, w = labels.shape
    nx0, nx1 = int(xs.min()), int(xs.max()) + 1
    ny0, ny1 = int(ys.min()), int(ys.max()) + 1
    g = int(round(p.cell_growth * D))
    wx0, wy0 = max(0, nx0 - g), max(0, ny0 - g)
    wx1, wy1 = min(w, nx1 + g), min(h, ny1 + g)
    lw = labels[wy0:wy1, wx0:wx1]
    nuc = lw == lab
    region = (cyto[wy0:wy1, wx0:wx1] & ((lw == 0) | nuc)) | nuc
    r = max(1.0, p.cell_open_radius * D)
    opened = ndi.binary_opening(region, structure=_disk(r)) | nuc
    comp, n = ndi.label(opened)
    keep = np.unique(comp[nuc])
    keep = keep[keep > 0]
    cell = np.isin(comp, keep)
    cell = ndi.binary_fill_holes(cell)
    yy, xx = np.nonzero(cell)
    return (
        float(wx0 + xx.min()),
        float(wy0 + yy.min()),
        float(wx0 + xx.max() + 1),
        float(wy0 + yy.max() + 1),
    )


# ---------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------


def crop_cell(image: ImageLike, box, *, margin: float = 0.15, size: int | None = None) -> Image.Image:
    """Crop a square-ish region around ``box`` (x0, y0, x1, y1).

    The crop is centred on the box, its side is the box's longer side plus
    ``margin`` of it on each side, then clipped to the field (so crops at the
    field border are smaller / not square).  If ``size`` is given the crop is
    resized so that its longer side is ``size`` (keeping the aspect ratio).
    """
    rgb = to_rgb_array(image)
    H, W = rgb.shape[:2]
    if len(box) != 4:
        raise ValueError("box must be (x0, y0, x1, y1)")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0:
        x0, x1 = x1, x0
    if y1 < y0:
        y0, y1 = y1, y0
    if margin < 0:
        raise ValueError("margin must be >= 0")
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cx0 = int(np.floor(cx - side / 2))
    cy0 = int(np.floor(cy - side / 2))
    cx1 = int(np.ceil(cx + side / 2))
    cy1 = int(np.ceil(cy + side / 2))
    cx0, cy0 = max(0, cx0), max(0, cy0)
    cx1, cy1 = min(W, cx1), min(H, cy1)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {tuple(box)} lies outside the {W}x{H} field")
    out = Image.fromarray(rgb[cy0:cy1, cx0:cx1])
    if size is not None:
        if size < 1:
            raise ValueError("size must be >= 1")
        cw, ch = out.size
        k = size / max(cw, ch)
        out = out.resize((max(1, round(cw * k)), max(1, round(ch * k))), Image.BICUBIC)
    return out
