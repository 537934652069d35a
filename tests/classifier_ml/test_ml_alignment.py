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


def test_the_source_class_mix_is_estimated_from_posteriors_under_the_training_mix():
    # two classes, 1-D Gaussians at -1 and +1; the posteriors are those of a classifier fitted on a
    # balanced training set, the source holds 80 % of class 0
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-1, 1, 4000), rng.normal(1, 1, 1000)])
    like = np.stack([np.exp(-(x + 1) ** 2 / 2), np.exp(-(x - 1) ** 2 / 2)], 1)
    proba = like / like.sum(1, keepdims=True)
    assert abs(proba.mean(0)[0] - 0.8) > 0.1  # the plain mean of the posteriors is far off
    np.testing.assert_allclose(alignment.source_prior(proba, np.array([0.5, 0.5])), [0.8, 0.2], atol=0.03)
    adjusted = alignment.adjust(proba, np.array([0.5, 0.5]), np.array([0.8, 0.2]))
    np.testing.assert_allclose(adjusted.sum(1), 1.0, rtol=1e-5)
    assert (adjusted[:, 0] >= proba[:, 0] - 1e-6).all()


def _nearest_mean_reader(means):
    def read(_backbone, f):
        d = ((np.asarray(f, np.float64)[:, None, :] - means[None]) ** 2).sum(-1)
        z = -d / 2
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    return read


def test_a_source_with_another_class_mix_is_aligned_class_balanced():
    """Home: three balanced classes. The source holds two of them (85 % / 15 %), shifted and scaled
    as a whole: the plain alignment carries that mix into the shift and misreads many cells; the
    class-balanced one reads clearly more of them right (not all: the spread of a two-class source is
    not the training spread, which no alignment of mean and spread undoes)."""
    rng = np.random.default_rng(2)
    means = np.array([[0.0] * 6, [2.5] + [0.0] * 5, [0.0, 2.5] + [0.0] * 4])
    home = np.concatenate([rng.normal(m, 0.6, (300, 6)) for m in means])
    stats = alignment.feature_stats(home)
    truth = np.array([0] * 255 + [1] * 45)
    source = np.concatenate([rng.normal(means[c], 0.6, (1, 6)) for c in truth]) * 1.7 + 4.0
    read = _nearest_mean_reader(means)
    plain = read("b", alignment.align(source, stats)).argmax(1)
    per, mix = alignment.class_balanced(read, {"b": source}, {"b": stats}, np.full(3, 1 / 3))
    balanced = per["b"].argmax(1)
    assert (balanced == truth).mean() >= (plain == truth).mean() + 0.12  # 0.79 against 0.60 when written
    assert mix[0] > 0.55 and mix[2] < 0.3  # the majority found the majority, the absent class rarer
    np.testing.assert_allclose(per["b"].sum(1), 1.0, rtol=1e-5)


def test_the_checkpoint_keeps_its_training_class_mix_and_an_older_one_aligns_plainly(trained, tmp_path):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    model = EnsembleModel(ckpt, digest, device="cpu", precision="fp32")
    assert model.class_prior is not None and len(model.class_prior) == len(model.classes)
    assert abs(model.class_prior.sum() - 1) < 1e-5 and (model.class_prior > 0).all()
    older = EnsembleModel({k: v for k, v in ckpt.items() if k != "class_prior"}, digest, device="cpu",
                          precision="fp32")
    assert older.class_prior is None
    fresh = make_images(tmp_path / "new", per_class=12, offset=300)
    foreign = [_restained(it.path, tmp_path / f"y{i}.png") for i, it in enumerate(fresh)]
    flags = np.ones(len(foreign), dtype=bool)
    read = {}
    for name, m in (("balanced", model), ("plain", older)):
        proba = m.predict_proba(foreign, align=False, keep_features=True)
        proba.ood_scores = np.full(len(foreign), m.ood.threshold + 1.0)
        read[name] = m.realign(proba)
        assert (read[name].aligned == flags).all()
        np.testing.assert_allclose(read[name].ensemble.sum(1), 1.0, rtol=1e-4)
    # the older checkpoint's guess is the plain alignment's, exactly
    plain = older.predict_proba(foreign, align=False, keep_features=True)
    b = older.backbones[0]
    f = alignment.align(plain.features[b], older.feature_stats[b])
    import torch

    from classifier.ml.training import softmax_np
    z = older.heads[b](torch.from_numpy(f)).detach().float().numpy()
    np.testing.assert_allclose(read["plain"].per_backbone[b], softmax_np(z, older.temperature[b]), atol=1e-5)
    assert not np.allclose(read["balanced"].per_backbone[b], read["plain"].per_backbone[b])
