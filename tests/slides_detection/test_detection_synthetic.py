"""Detector tests on synthetic fields (no data set, no database)."""
import numpy as np
import pytest
from PIL import Image

from slides.detection import (
    Detection,
    DetectionParams,
    crop_cell,
    detect_in_large_field,
    detect_white_cells,
    iou,
    nms,
)

from slides.detection.synthetic import blank, disc, field_with_cells, finish, red_cell, white_cell, NUCLEUS, PLATELET


def _wbc(dets):
    return [d for d in dets if d.kind == "wbc"]


def _match_all(dets, boxes, thr):
    """Each true box has exactly one detection with IoU >= thr."""
    for b in boxes:
        hits = [d for d in dets if iou(d.box, b) >= thr]
        assert len(hits) == 1, (b, dets)


def test_synthetic_field_exact_count_and_boxes():
    img, boxes = field_with_cells()
    dets = detect_white_cells(img)
    wbc = _wbc(dets)
    assert len(wbc) == 3
    _match_all(wbc, boxes, 0.85)
    for d in wbc:
        assert isinstance(d, Detection)
        assert 0.0 <= d.score <= 1.0
        x0, y0, x1, y1 = d.box
        assert all(isinstance(v, int) for v in d.box)
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    # sorted by score
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_pil_input_gives_same_result():
    img, _ = field_with_cells()
    a = detect_white_cells(img)
    b = detect_white_cells(Image.fromarray(img))
    assert [d.box for d in a] == [d.box for d in b]


def test_red_cells_and_platelets_only_give_nothing():
    img = blank(480, 640, seed=3)
    rng = np.random.default_rng(3)
    for _ in range(30):
        red_cell(img, rng.uniform(0, 640), rng.uniform(0, 480), r=rng.uniform(38, 48))
    for _ in range(6):
        disc(img, rng.uniform(20, 620), rng.uniform(20, 460), rng.uniform(6, 11), PLATELET)
    assert detect_white_cells(finish(img)) == []


def test_empty_field_gives_nothing():
    img = finish(blank(480, 640, seed=5))
    assert detect_white_cells(img) == []
    assert detect_white_cells(np.full((480, 640, 3), 255, np.uint8)) == []
    assert detect_white_cells(np.zeros((480, 640, 3), np.uint8)) == []


def test_two_touching_cells_are_split():
    img = blank(480, 640, seed=7)
    # Cell bodies overlap (centres 150 px apart, radius 90) and the nuclei
    # almost touch (gap ~20 px): both must be found, once each.
    b1 = white_cell(img, 245, 240, r=90, nr=65)
    b2 = white_cell(img, 395, 240, r=90, nr=65)
    disc(img, 245, 240, 65, NUCLEUS)  # redraw nucleus 1 over cell 2's cytoplasm
    dets = _wbc(detect_white_cells(finish(img)))
    assert len(dets) == 2, dets
    _match_all(dets, [b1, b2], 0.5)


def test_two_cells_with_fused_nuclei_are_split():
    img = blank(480, 640, seed=8)
    disc(img, 250, 240, 95, (214, 198, 226))
    disc(img, 400, 240, 95, (214, 198, 226))
    disc(img, 250, 240, 80, NUCLEUS)
    disc(img, 400, 240, 80, NUCLEUS)  # nuclei overlap: one connected blob
    dets = _wbc(detect_white_cells(finish(img)))
    assert len(dets) == 2, dets
    cx = sorted(d.center[0] for d in dets)
    assert abs(cx[0] - 250) < 40 and abs(cx[1] - 400) < 40


def test_lobed_nucleus_is_one_cell():
    img = blank(480, 640, seed=9)
    disc(img, 320, 240, 95, (214, 198, 226))
    for dx, dy in [(-45, -20), (0, 25), (45, -20)]:  # three separate lobes
        disc(img, 320 + dx, 240 + dy, 27, NUCLEUS)
    dets = _wbc(detect_white_cells(finish(img)))
    assert len(dets) == 1
    assert iou(dets[0].box, (225, 145, 415, 335)) > 0.6


def test_cell_cut_by_field_border_is_found_and_clipped():
    img = blank(480, 640, seed=11)
    white_cell(img, 20, 240)  # centre 20 px from the left edge
    dets = _wbc(detect_white_cells(finish(img)))
    assert len(dets) == 1
    x0, y0, x1, y1 = dets[0].box
    assert x0 == 0 and 90 <= x1 <= 125 and abs(y0 - 150) < 10 and abs(y1 - 330) < 10


def test_scale_parameter():
    # The same field at half size needs cell_diameter_px halved.
    img, boxes = field_with_cells()
    half = np.asarray(Image.fromarray(img).resize((320, 240), Image.BILINEAR))
    dets = _wbc(detect_white_cells(half, params=DetectionParams(cell_diameter_px=100)))
    assert len(dets) == 3
    _match_all(dets, [tuple(v / 2 for v in b) for b in boxes], 0.75)


def test_large_tiled_field_cell_on_tile_border_counted_once():
    H, W = 4000, 6000
    img = np.empty((H, W, 3), np.uint8)
    img[:] = (236, 218, 222)
    # Draw cells on a small canvas per cell (fast), pasted into the big field.
    centres = [
        (1024 - 20, 500),   # straddles the x border of tile 0 (tile 1024, overlap 256)
        (768 + 5, 1400),    # right on the start of tile 1
        (3000, 1024 - 10),  # straddles a y border
        (2200, 2200),       # in the overlap of four tiles
        (5900, 3900),       # field corner: cut by the field border
        (4500, 3000),
    ]
    truth = []
    for cx, cy in centres:
        pad = 100
        patch = blank(2 * pad, 2 * pad, seed=cx + cy)
        patch[:] = (236, 218, 222)
        white_cell(patch, pad, pad)
        x0, y0 = cx - pad, cy - pad
        px0, py0 = max(0, -x0), max(0, -y0)
        x1, y1 = min(W, cx + pad), min(H, cy + pad)
        img[max(0, y0):y1, max(0, x0):x1] = finish(patch)[py0 : py0 + y1 - max(0, y0), px0 : px0 + x1 - max(0, x0)]
        truth.append((max(0, cx - 90), max(0, cy - 90), min(W, cx + 90), min(H, cy + 90)))
    # red cells around, including across tile borders
    rng = np.random.default_rng(0)
    for _ in range(60):
        cx, cy = int(rng.uniform(50, W - 50)), int(rng.uniform(50, H - 50))
        if all(abs(cx - a) > 160 or abs(cy - b) > 160 for a, b in centres):
            patch = np.empty((100, 100, 3), np.float32)
            patch[:] = (236, 218, 222)
            red_cell(patch, 50, 50, r=45)
            img[cy - 50 : cy + 50, cx - 50 : cx + 50] = finish(patch)
    dets = _wbc(detect_in_large_field(img, tile=1024, overlap=256))
    assert len(dets) == len(centres), dets
    _match_all(dets, truth, 0.7)
    for d in dets:
        assert 0 <= d.box[0] < d.box[2] <= W and 0 <= d.box[1] < d.box[3] <= H


def test_large_field_small_image_equals_single_field():
    img, boxes = field_with_cells()
    a = _wbc(detect_in_large_field(img))
    assert len(a) == 3
    _match_all(a, boxes, 0.85)


def test_large_field_bad_tiling_arguments():
    img, _ = field_with_cells()
    with pytest.raises(ValueError):
        detect_in_large_field(img, tile=512, overlap=512)
    with pytest.raises(ValueError):
        detect_in_large_field(img, tile=10)


def test_nms_merges_duplicates():
    a = Detection((0, 0, 100, 100), 0.9)
    b = Detection((5, 5, 102, 101), 0.8)
    c = Detection((300, 300, 400, 400), 0.7)
    kept = nms([b, a, c])
    assert [d.box for d in kept] == [a.box, c.box]


def test_crop_cell_inside_and_clipped():
    img, boxes = field_with_cells()
    crop = crop_cell(img, (100, 100, 200, 200), margin=0.1)
    assert crop.size == (120, 120)
    # at the border: clipped to the field, no padding
    # side = 60 * 1.3 = 78 centred on (25, 30): x -14..64, y -9..69 -> clipped at 0
    crop = crop_cell(img, (0, 0, 50, 60), margin=0.15)
    assert crop.size == (64, 69)
    assert np.array_equal(np.asarray(crop), img[0:69, 0:64])
    crop = crop_cell(img, (600, 440, 640, 480), margin=0.5)
    assert crop.size[0] <= 60 and crop.size[1] <= 60
    assert np.array_equal(np.asarray(crop)[-1, -1], img[479, 639])
    # resized
    crop = crop_cell(img, boxes[0], size=96)
    assert max(crop.size) == 96 and crop.mode == "RGB"
    with pytest.raises(ValueError):
        crop_cell(img, (700, 500, 800, 600))
    with pytest.raises(ValueError):
        crop_cell(img, (0, 0, 10))


def test_bad_inputs():
    img, _ = field_with_cells()
    # grey-scale: converted, no stain colour -> nothing
    grey = img.mean(axis=2).astype(np.uint8)
    assert detect_white_cells(grey) == []
    assert detect_white_cells(Image.fromarray(grey)) == []
    # RGBA: alpha dropped / composited
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    assert len(_wbc(detect_white_cells(rgba))) == 3
    assert len(_wbc(detect_white_cells(Image.fromarray(rgba)))) == 3
    # float [0, 1]
    assert len(_wbc(detect_white_cells(img.astype(np.float32) / 255))) == 3
    # tiny images
    assert detect_white_cells(np.zeros((1, 1, 3), np.uint8)) == []
    assert detect_white_cells(Image.new("RGB", (1, 1))) == []
    assert detect_in_large_field(np.zeros((1, 1, 3), np.uint8)) == []
    # invalid
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 2), np.uint8), np.zeros((2, 2, 2, 2)), "x", None):
        with pytest.raises(ValueError):
            detect_white_cells(bad)
    with pytest.raises(ValueError):
        detect_white_cells(np.full((20, 20, 3), np.nan))
