"""Detector on a few real fields (skipped when the shared data is absent).

Data: BCCD (Shenggan/BCCD_Dataset, MIT licence) and PBC (Acevedo et al. 2020,
CC BY 4.0), read in place from the shared data folder (LEUKO_SHARED_DATA, else ../shared/data beside the checkout) -- nothing is copied.
Only fields of the benchmark's *tune* split are used here.
"""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from slides.detection import detect_in_large_field, detect_white_cells, iou
from tests.helpers import SHARED_DATA

BCCD = SHARED_DATA / "bccd-dev"
PBC = SHARED_DATA / "pbc-dev"


def _gt(stem):
    root = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
    out = []
    for o in root.findall("object"):
        if o.findtext("name").strip() == "WBC":
            b = o.find("bndbox")
            out.append(tuple(int(float(b.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out


@pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason="bccd-dev data not available")
@pytest.mark.parametrize(
    "stem",
    [
        "BloodImage_00006",  # segmented neutrophil
        "BloodImage_00020",  # small lymphocyte
        "BloodImage_00251",  # eosinophil, two separate lobes + granules
        "BloodImage_00001",  # neutrophil cut by the bottom border
    ],
)
def test_bccd_field_wbc_found(stem):
    gt = _gt(stem)
    assert len(gt) == 1
    img = Image.open(BCCD / "JPEGImages" / f"{stem}.jpg")
    dets = [d for d in detect_white_cells(img) if d.kind == "wbc"]
    assert len(dets) == 1, dets
    assert iou(dets[0].box, gt[0]) >= 0.5
    # the tiled path gives the same answer on a small field
    tiled = [d for d in detect_in_large_field(img, tile=512, overlap=256) if d.kind == "wbc"]
    assert len(tiled) == 1 and iou(tiled[0].box, gt[0]) >= 0.5


@pytest.mark.skipif(not PBC.is_dir(), reason="pbc-dev data not available")
@pytest.mark.parametrize("cls", ["lymphocyte", "neutrophil_segmented", "monocyte"])
def test_pbc_centre_cell_found(cls):
    # PBC crops are centred on one white cell (another stain / camera).
    files = sorted((PBC / cls).glob("*.jpg"))[:3]
    if not files:
        pytest.skip("no files")
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        h, w = img.shape[:2]
        dets = [d for d in detect_white_cells(img) if d.kind == "wbc"]
        centre = [d for d in dets if d.box[0] < w / 2 < d.box[2] and d.box[1] < h / 2 < d.box[3]]
        assert len(centre) == 1, (f.name, dets)
