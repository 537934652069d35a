"""Synthetic smear fields (drawn cells) for tests, demos and sanity checks."""
from __future__ import annotations

import numpy as np

BACKGROUND = (236, 218, 222)  # pinkish plasma background
RBC = (222, 168, 170)  # pale red cells
CYTOPLASM = (214, 198, 226)  # pale lilac cytoplasm
NUCLEUS = (118, 78, 168)  # purple nucleus
PLATELET = (120, 70, 160)  # small purple speck


def blank(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = BACKGROUND
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    return img


def disc(img: np.ndarray, cx: float, cy: float, r: float, colour) -> None:
    h, w = img.shape[:2]
    x0, x1 = max(0, int(cx - r - 2)), min(w, int(cx + r + 3))
    y0, y1 = max(0, int(cy - r - 2)), min(h, int(cy + r + 3))
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    a = np.clip(r + 0.5 - d, 0, 1)[..., None]  # anti-aliased edge
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + np.asarray(colour, np.float32) * a


def red_cell(img, cx, cy, r=45):
    disc(img, cx, cy, r, RBC)
    disc(img, cx, cy, r * 0.4, tuple(0.5 * (np.array(RBC) + np.array(BACKGROUND))))  # central pallor


def white_cell(img, cx, cy, r=90, nr=55):
    """Draw a leukocyte; returns its true box (x0, y0, x1, y1)."""
    disc(img, cx, cy, r, CYTOPLASM)
    disc(img, cx, cy, nr, NUCLEUS)
    return (cx - r, cy - r, cx + r, cy + r)


def finish(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).round().astype(np.uint8)


def field_with_cells(seed: int = 1):
    """640x480 field: 3 leukocytes, a dozen red cells, two platelets."""
    img = blank(480, 640, seed)
    rng = np.random.default_rng(seed)
    wbc = [(140, 130), (470, 120), (330, 350)]
    for _ in range(40):
        cx, cy = rng.uniform(0, 640), rng.uniform(0, 480)
        if all((cx - x) ** 2 + (cy - y) ** 2 > 150**2 for x, y in wbc):
            red_cell(img, cx, cy, r=rng.uniform(38, 48))
    boxes = [white_cell(img, x, y) for x, y in wbc]
    disc(img, 560, 420, 9, PLATELET)
    disc(img, 60, 420, 10, PLATELET)
    return finish(img), boxes
