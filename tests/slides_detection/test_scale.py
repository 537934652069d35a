"""The field's scale measured on its red cells, and detection at any magnification (pure: no
Django, no database; the bccd-dev test is skipped when the shared data is absent)."""

import numpy as np
import pytest
from PIL import Image

from slides.detection import DetectionParams, detect_white_cells, iou
from slides.detection.scale import (
    DEFAULT_MICRONS_PER_PIXEL,
    DETECTOR_CELL_DIAMETER_UM,
    RED_CELL_DIAMETER_UM,
    field_scale,
    red_cell_diameter,
)
from slides.detection.synthetic import blank, field_with_cells, finish, red_cell
from slides.pipeline import find_cells
from tests.helpers import SHARED_DATA

BCCD = SHARED_DATA / "bccd-dev"


def _resize(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((round(w * factor), round(h * factor)), Image.LANCZOS))


def _field_of_red_cells(r: float, seed: int = 0, size=(480, 640)) -> np.ndarray:
    img = blank(*size, seed=seed)
    rng = np.random.default_rng(seed)
    step = 2.6 * r
    for y in np.arange(r, size[0], step):
        for x in np.arange(r, size[1], step):
            red_cell(img, x + rng.uniform(-0.2, 0.2) * r, y + rng.uniform(-0.2, 0.2) * r, r=r)
    return finish(img)


@pytest.mark.parametrize("r", [15, 25, 45])
def test_red_cell_diameter_is_measured_at_any_size(r):
    measured = red_cell_diameter(_field_of_red_cells(r))
    # drawn discs of diameter 2r (thickness x the oval-cell factor fitted on BCCD: within 30 %)
    assert measured == pytest.approx(2 * r, rel=0.3)


def test_the_estimate_follows_the_magnification():
    img, _ = field_with_cells()
    one = red_cell_diameter(img)
    for factor in (0.5, 2.0):
        assert red_cell_diameter(_resize(img, factor)) == pytest.approx(one * factor, rel=0.1)


def test_the_scale_comes_from_the_setting_the_red_cells_or_the_default_and_says_which():
    img, _ = field_with_cells()
    measured = field_scale(img)
    assert measured.source == "red cells"
    assert measured.microns_per_pixel == pytest.approx(RED_CELL_DIAMETER_UM / measured.red_cell_diameter_px)
    assert measured.params().cell_diameter_px == pytest.approx(DETECTOR_CELL_DIAMETER_UM / measured.microns_per_pixel)
    given = field_scale(img, microns_per_pixel=0.1)
    assert given.source == "setting" and given.cell_diameter_px == pytest.approx(DETECTOR_CELL_DIAMETER_UM / 0.1)
    empty = field_scale(finish(blank(480, 640, seed=2)))  # no red cell at all: nothing to measure
    assert empty.source == "default" and empty.microns_per_pixel == DEFAULT_MICRONS_PER_PIXEL
    assert empty.cell_diameter_px == pytest.approx(DetectionParams().cell_diameter_px)
    with pytest.raises(ValueError, match="microns per pixel"):
        field_scale(img, microns_per_pixel=5.0)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_cells_are_found_at_another_magnification_where_the_fixed_detector_fails(factor):
    img, boxes = field_with_cells()
    scaled = _resize(img, factor)
    truth = [tuple(v * factor for v in b) for b in boxes]
    found = [c for c in find_cells(scaled).cells if c.kind == "wbc"]
    assert len(found) == 3
    for b in truth:
        assert sum(1 for c in found if iou(c.box, b) >= 0.5) == 1
    if factor < 1:  # the detector's fixed default sizes drop these smaller cells
        fixed = [d for d in detect_white_cells(scaled) if d.kind == "wbc"]
        assert sum(1 for b in truth if any(iou(d.box, b) >= 0.5 for d in fixed)) < 3


@pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason="bccd-dev data not available")
@pytest.mark.parametrize("factor", [0.5, 0.75, 1.5, 2.0])
def test_a_real_field_is_found_at_every_magnification(factor):
    # BloodImage_00006 (tune split): one segmented neutrophil
    import xml.etree.ElementTree as ET

    root = ET.parse(BCCD / "Annotations" / "BloodImage_00006.xml").getroot()
    b = next(o.find("bndbox") for o in root.findall("object") if o.findtext("name").strip() == "WBC")
    gt = [float(b.findtext(k)) * factor for k in ("xmin", "ymin", "xmax", "ymax")]
    rgb = _resize(np.asarray(Image.open(BCCD / "JPEGImages" / "BloodImage_00006.jpg").convert("RGB")), factor)
    result = find_cells(rgb)
    assert result.scale.source == "red cells"
    wbc = [c for c in result.cells if c.kind == "wbc"]
    assert len(wbc) == 1 and iou(wbc[0].box, gt) >= 0.5
