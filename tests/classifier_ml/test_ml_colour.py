"""Colour standardisation (classifier.ml.colour): Reinhard in Lab to a fixed reference, its part in
the feature cache's key, and its trip through a checkpoint into the engine."""

import numpy as np
import pytest
from PIL import Image

from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.colour import (check_reference, fit_reference, identity, lab_stats, lab_to_rgb, reinhard,
                                  rgb_to_lab, standardiser)
from classifier.ml.features import preprocess_identity
from classifier.ml.preprocess import PREPROCESS_VERSION, load_resized

from .cells import CLASSES


def _smear(seed: int, tint=(0, 0, 0)) -> np.ndarray:
    """A pale background with a violet disc and noise: colours well inside the sRGB gamut."""
    rng = np.random.default_rng(seed)
    img = np.full((48, 48, 3), (215, 190, 195), np.float32) + rng.normal(0, 10, (48, 48, 3))
    yy, xx = np.mgrid[:48, :48]
    img[(yy - 24) ** 2 + (xx - 22) ** 2 < 150] = (130, 80, 150)
    img += rng.normal(0, 6, img.shape) + np.asarray(tint, np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


REF = {"method": "reinhard", "mean": [68.0, 12.0, -8.0], "std": [14.0, 7.0, 9.0]}


def test_lab_conversion_equals_scikit_image():
    from skimage.color import lab2rgb, rgb2lab

    img = _smear(1)
    lab = rgb2lab(img)
    assert np.abs(rgb_to_lab(img) - lab.reshape(-1, 3)).max() < 1e-3
    moved = lab * [1.1, 1.6, 1.4] + [-5, 8, -12]  # some colours out of gamut: both clip them
    ours = lab_to_rgb(moved.reshape(-1, 3), img.shape[:2]).astype(int)
    assert np.abs(ours - np.rint(lab2rgb(moved) * 255).astype(int)).max() <= 1


def test_a_known_lab_mean_and_std_are_mapped_to_the_reference():
    img = _smear(2, tint=(20, -10, 15))
    before_mean, before_std = lab_stats(img)
    assert np.abs(before_mean - REF["mean"]).max() > 5  # far from the reference to begin with
    mean, std = lab_stats(reinhard(img, mean=REF["mean"], std=REF["std"]))
    assert np.abs(mean - REF["mean"]).max() < 0.5
    assert np.abs(std - REF["std"]).max() < 0.5


def test_an_image_already_at_the_reference_is_left_as_it_is():
    img = _smear(3)
    mean, std = lab_stats(img)
    same = reinhard(img, mean=mean, std=std)
    assert np.abs(same.astype(int) - img).max() <= 1
    once = reinhard(img, mean=REF["mean"], std=REF["std"])
    twice = reinhard(once, mean=REF["mean"], std=REF["std"])  # idempotent up to uint8 rounding
    assert np.abs(twice.astype(int) - once).max() <= 2


def test_two_stainings_of_one_smear_become_nearly_the_same_image():
    plain, tinted = _smear(4), _smear(4, tint=(25, -15, 20))
    assert np.abs(plain.astype(int) - tinted).mean() > 15
    a = reinhard(plain, mean=REF["mean"], std=REF["std"]).astype(int)
    b = reinhard(tinted, mean=REF["mean"], std=REF["std"]).astype(int)
    assert np.abs(a - b).mean() < 5


def test_the_reference_is_the_mean_of_the_images_own_statistics(tmp_path):
    imgs = [_smear(5), _smear(6, tint=(10, 0, -10))]
    path = tmp_path / "cell.png"
    Image.fromarray(imgs[1]).save(path)
    ref = fit_reference([imgs[0], path])
    stats = [lab_stats(i) for i in imgs]
    assert ref["method"] == "reinhard" and ref["n_images"] == 2
    assert np.allclose(ref["mean"], np.mean([m for m, _ in stats], 0), atol=1e-3)
    assert np.allclose(ref["std"], np.mean([s for _, s in stats], 0), atol=1e-3)
    with pytest.raises(ValueError):
        fit_reference([])


@pytest.mark.parametrize("bad", [{"method": "macenko", "mean": [1, 2, 3], "std": [1, 1, 1]},
                                 {"method": "reinhard", "mean": [1, 2], "std": [1, 1, 1]},
                                 {"method": "reinhard", "mean": [1, 2, 3], "std": [1, 0, 1]},
                                 {"method": "reinhard", "mean": [1, float("nan"), 3], "std": [1, 1, 1]},
                                 "reinhard"])
def test_a_malformed_reference_is_refused(bad):
    with pytest.raises(ValueError):
        check_reference(bad)


def test_the_cache_key_names_the_standardisation_and_its_reference():
    assert preprocess_identity(None) == PREPROCESS_VERSION  # plain images: the old key, old caches stay valid
    ident = preprocess_identity(REF)
    assert ident.startswith(PREPROCESS_VERSION + "+reinhard-")
    other = dict(REF, mean=[68.0, 12.0, -7.0])
    assert preprocess_identity(other) != ident and identity(other) != identity(REF)
    assert identity(dict(REF, n_images=10)) == identity(REF)  # what it does, not how it was fitted


def test_decoding_applies_the_standardiser_before_resizing(tmp_path):
    img = _smear(7, tint=(20, -10, 15))
    path = tmp_path / "c.png"
    Image.fromarray(img).save(path)
    plain = load_resized(path, [48])[48]
    std = load_resized(path, [48], standardiser(REF))[48]
    expected = reinhard(img, mean=REF["mean"], std=REF["std"])
    assert np.array_equal(std.permute(1, 2, 0).numpy(), expected)
    assert np.array_equal(plain.permute(1, 2, 0).numpy(), img)
    assert standardiser(None) is None


def test_the_checkpoint_carries_its_reference_into_the_engine(dataset, tmp_path):
    kw = dict(classes=CLASSES, ensemble=["efficientnet_lite0"], epochs=2, cache_dir=tmp_path / "cache",
              device="cpu", weights=None, seed=0)
    plain = api.train(dataset, out_dir=tmp_path / "plain", config_overrides={"input_size": 64}, **kw)
    ref = dict(REF, n_images=30)
    result = api.train(dataset, out_dir=tmp_path / "std",
                       config_overrides={"input_size": 64, "colour_standardisation": ref}, **kw)
    # features of the plain images are not reused: the standardised run featurised every image again
    assert result.metrics["featurised"]["efficientnet_lite0"]["new"] == len(dataset)
    ckpt, _ = load_checkpoint(result.checkpoint_path)  # weights_only=True
    assert ckpt["config"]["colour_standardisation"] == ref
    key_plain = load_checkpoint(plain.checkpoint_path)[0]["backbone_info"]["efficientnet_lite0"]["feature_key"]
    assert ckpt["backbone_info"]["efficientnet_lite0"]["feature_key"] != key_plain
    assert load_checkpoint(plain.checkpoint_path)[0]["config"]["colour_standardisation"] is None
    model = api.load_ensemble(result.checkpoint_path, device="cpu")
    assert model.standardise is not None
    assert api.load_ensemble(plain.checkpoint_path, device="cpu").standardise is None
    # the engine sees what training saw: a cell and its standardised copy score the same
    cell = Image.open(dataset[0].path).convert("RGB")
    copy = Image.fromarray(reinhard(cell, mean=ref["mean"], std=ref["std"]))
    p = model.predict_proba([cell, copy])
    assert np.allclose(p.ensemble[0], p.ensemble[1], atol=0.02)


def test_a_malformed_reference_is_refused_before_training(dataset, tmp_path):
    with pytest.raises(ValueError):
        api.train(dataset, classes=CLASSES, ensemble=["efficientnet_lite0"], epochs=1, cache_dir=tmp_path,
                  out_dir=tmp_path, device="cpu", weights=None,
                  config_overrides={"colour_standardisation": {"method": "reinhard"}})
