"""The synthetic labs of the adaptation benchmark (benchmarks/shifts.py) and its cell choices:
pure, on small synthetic images."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from benchmarks import adaptation, shifts


def _cell(seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.full((64, 64, 3), (220, 195, 200), np.float32) + rng.normal(0, 6, (64, 64, 3))
    yy, xx = np.mgrid[:64, :64]
    img[(yy - 32) ** 2 + (xx - 32) ** 2 < 200] = (120, 70, 150)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _arr(im):
    return np.asarray(im, np.float32)


@pytest.mark.parametrize("domain", list(shifts.DOMAINS))
def test_every_domain_keeps_the_frame_and_changes_the_cell_the_same_way_each_time(domain):
    cell = _cell()
    out = shifts.apply_domain(cell, domain)
    assert out.mode == "RGB" and out.size == cell.size
    assert np.abs(_arr(out) - _arr(cell)).mean() > 0.5
    assert np.array_equal(np.asarray(out), np.asarray(shifts.apply_domain(cell, domain)))


def test_the_stain_domain_turns_the_hue_and_lowers_the_saturation():
    cell = _cell()
    hsv0, hsv1 = (np.asarray(im.convert("HSV"), np.float32) for im in (cell, shifts.apply_domain(cell, "stain")))
    disc = np.zeros((64, 64), bool)
    disc[28:36, 28:36] = True
    turned = (hsv1[..., 0][disc].mean() - hsv0[..., 0][disc].mean()) % 256
    assert abs(turned - 20 / 360 * 255) < 3
    assert hsv1[..., 1].mean() < 0.85 * hsv0[..., 1].mean()


def test_the_hed_domain_scales_the_haematoxylin_and_the_eosin():
    from skimage.color import rgb2hed

    cell = _cell()
    before, after = rgb2hed(np.asarray(cell)), rgb2hed(np.asarray(shifts.apply_domain(cell, "hed")))
    h, e = shifts.DOMAINS["hed"][0][1]
    assert after[..., 0].mean() / before[..., 0].mean() == pytest.approx(h, rel=0.1)
    assert after[..., 1].mean() / before[..., 1].mean() == pytest.approx(e, rel=0.1)


def test_blur_removes_fine_detail_and_scale_enlarges_the_cell():
    cell = _cell()
    blurred = _arr(shifts.apply_domain(cell, "blur"))
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(_arr(cell), axis=1)).mean()
    big = np.asarray(shifts.apply_domain(cell, "scale"))
    dark = lambda a: (np.asarray(a)[..., 0] < 170).sum()  # noqa: E731 - the disc's area
    assert dark(big) == pytest.approx(dark(cell) * 1.25 ** 2, rel=0.15)


def test_jpeg_and_unknown_shifts():
    cell = _cell()
    assert shifts.shifted(cell, "jpeg", 95).size == cell.size
    with pytest.raises(ValueError):
        shifts.shifted(cell, "sepia", 1)
    with pytest.raises(ValueError):
        shifts.apply_domain(cell, "moon")


def test_a_domain_is_written_once_with_the_same_bytes_and_classes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cells = []
    for i, c in enumerate(["monocyte", "platelet"]):
        p = src / f"{c}_{i}.jpg"
        _cell(i).save(p)
        cells.append((p, c))
    out = shifts.write_domain(cells, "stain", tmp_path / "stain")
    assert [(p.name, c) for p, c in out] == [("monocyte_0.png", "monocyte"), ("platelet_1.png", "platelet")]
    assert all(p.parent.name == c for p, c in out)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in out]
    again = shifts.write_domain(cells, "stain", tmp_path / "stain")
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in again] == digest
    assert not list((tmp_path / "stain").rglob("*.tmp"))


def test_cells_per_class_and_the_tune_test_halves(tmp_path):
    cells = [(tmp_path / f"{c}{i}.png", c) for c in ("a", "b") for i in range(6)]
    few = adaptation.first_per_class(cells, 2, seed=0)
    assert [c for _, c in few] == ["a", "a", "b", "b"]
    assert few == adaptation.first_per_class(cells, 2, seed=0)
    assert adaptation.first_per_class(cells, 0, seed=0) == cells
    names = [f"cell_{i}.png" for i in range(200)]
    tune = {n for n in names if adaptation.in_part(n, "tune")}
    test = {n for n in names if adaptation.in_part(n, "test")}
    assert not tune & test and tune | test == set(names) and 70 < len(tune) < 130
    assert all(adaptation.in_part(n, "all") for n in names)
