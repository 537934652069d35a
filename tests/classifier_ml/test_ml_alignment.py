"""The aligned best guess of a new source's cells (classifier.ml.alignment): the arithmetic, and
on a trained ensemble that only the best guesses of flagged cells of a mostly-flagged batch change,
and that they stay referred."""

import copy

import numpy as np
from PIL import Image

from classifier.ml import alignment
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.engine import OUT_OF_DISTRIBUTION, EnsembleModel, Probabilities

from .cells import make_images


def test_align_maps_a_shifted_and_scaled_source_onto_the_training_statistics():
    rng = np.random.default_rng(0)
    home = rng.normal(2.0, 0.5, (500, 16))
    stats = alignment.feature_stats(home)
    foreign = rng.normal(0.0, 1.0, (200, 16)) * 3.0 - 7.0
    out = alignment.align(foreign, stats)
    np.testing.assert_allclose(out.mean(0), stats["mean"], atol=1e-3)
    np.testing.assert_allclose(out.std(0), stats["std"], rtol=2e-3)
    # the order of the cells along each feature is kept
    assert (np.argsort(out[:, 3]) == np.argsort(foreign[:, 3])).all()


def test_only_a_batch_mostly_unlike_the_training_images_is_aligned():
    assert not alignment.applies(np.array([True] * (alignment.MIN_CELLS - 1)))  # too few to estimate
    assert alignment.applies(np.array([True] * alignment.MIN_CELLS))
    mixed = np.array([True] * 40 + [False] * 60)  # a few odd cells of the home microscope
    assert not alignment.applies(mixed)
    assert alignment.applies(np.array([True] * 60 + [False] * 40))


def _restained(path, out):
    """The cell under another stain: channels swapped."""
    arr = np.array(Image.open(path).convert("RGB"))[..., ::-1]
    Image.fromarray(np.ascontiguousarray(arr)).save(out)
    return out


def test_flagged_cells_of_a_new_source_get_an_aligned_guess_and_stay_referred(trained, tmp_path):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    assert set(ckpt["feature_stats"]) == set(ckpt["backbones"])
    model = EnsembleModel(ckpt, digest, device="cpu", precision="fp32")
    assert model.can_realign()
    fresh = make_images(tmp_path / "new", per_class=12, offset=200)  # 36 cells never trained on
    foreign = [_restained(it.path, tmp_path / f"x{i}.png") for i, it in enumerate(fresh)]

    plain = model.predict_proba(foreign, align=False, keep_features=True)
    # the check's own verdict on real shifts is tested in test_ml_ood.py; here 30 of the 36 cells
    # are over its threshold, the other six just under it
    flags = np.arange(len(foreign)) < 30
    plain.ood_scores = np.where(flags, model.ood.threshold + 1.0, model.ood.threshold - 1e-3)
    assert (model.ood.flags(plain.ood_scores) == flags).all() and alignment.applies(flags)
    aligned = model.realign(copy.deepcopy(plain))
    assert (aligned.aligned == flags).all()
    # cells not flagged keep their probabilities; flagged ones are read again
    np.testing.assert_array_equal(aligned.ensemble[~flags], plain.ensemble[~flags])
    assert not np.allclose(aligned.ensemble[flags], plain.ensemble[flags])
    # predict_proba does it by itself, and returns the features only when asked
    assert model.predict_proba(foreign[:3]).features is None
    # the referral does not move: every aligned cell is still referred as unlike the training images
    before, after = model.decide(plain), model.decide(aligned)
    for b, a in zip(before, after):
        assert a.abstained == b.abstained and a.reasons == b.reasons
        if a.aligned:
            assert a.abstained and OUT_OF_DISTRIBUTION in a.reasons and a.label == "unidentified"


def test_home_cells_and_checkpoints_without_statistics_are_not_aligned(trained, dataset):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    model = EnsembleModel(ckpt, digest, device="cpu", precision="fp32")
    paths = [it.path for it in dataset]
    home = model.predict_proba(paths)
    assert not home.aligned.any()
    np.testing.assert_array_equal(home.ensemble, model.predict_proba(paths, align=False).ensemble)
    old = EnsembleModel({k: v for k, v in ckpt.items() if k != "feature_stats"}, digest, device="cpu",
                        precision="fp32")
    assert not old.can_realign()
    assert old.predict_proba(paths).aligned is None


def test_probabilities_of_several_batches_join_in_order(trained, dataset):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    model = EnsembleModel(ckpt, digest, device="cpu", precision="fp32")
    paths = [it.path for it in dataset]
    whole = model.predict_proba(paths, align=False, keep_features=True)
    joined = Probabilities.concat([model.predict_proba(paths[:7], align=False, keep_features=True),
                                   model.predict_proba(paths[7:], align=False, keep_features=True)])
    np.testing.assert_allclose(joined.ensemble, whole.ensemble, atol=1e-5)
    np.testing.assert_allclose(joined.ood_scores, whole.ood_scores, atol=1e-3)  # batch-size rounding
    assert joined.features[model.backbones[0]].shape == whole.features[model.backbones[0]].shape
