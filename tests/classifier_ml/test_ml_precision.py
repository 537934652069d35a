"""bf16 with the fp32 re-check near decisions: the rule, its measurement, and the engine."""

import numpy as np
import pytest

from classifier.ml import precision
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.device import cpu_supports_bf16
from classifier.ml.engine import EnsembleModel
from classifier.ml.runtime import openvino_available
from classifier.ml.voting import vote

T1 = np.ones(3)


def test_small_margins_ties_and_close_soft_votes_are_rechecked():
    z = np.array([
        # cell 0: clear for every backbone; cell 1: backbone 0 close; cell 2: three-way tie
        [[9.0, 0.0, 0.0], [5.0, 4.9, 0.0], [9.0, 0.0, 0.0]],
        [[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]],
        [[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 9.0]],
    ])
    mask = precision.recheck_mask(z, T1, logit_tol=np.full(3, 0.2), proba_tol=0.001)
    assert mask.shape == (3, 3)
    assert not mask[:, 0].any()
    assert mask[0, 1] and not mask[1:, 1].any()  # only the backbone that is close
    assert mask[:, 2].all()  # a tie is broken by mean probability: the whole cell
    # a soft vote within the probability tolerance is rechecked as a whole cell
    soft_close = precision.recheck_mask(z[:, :1], T1, logit_tol=np.zeros(3), proba_tol=1.0)
    assert soft_close.all()
    # so is a cell whose confidence is near the abstention threshold (referral must not depend on bf16)
    assert not precision.recheck_mask(z[:, :1], T1, np.zeros(3), 0.02, threshold=0.5).any()
    assert precision.recheck_mask(z[:, :1], T1, np.zeros(3), 0.02, threshold=0.99).all()


def test_recheck_keeps_the_fp32_votes_where_plain_bf16_flips_them():
    rng = np.random.default_rng(0)
    cells = rng.normal(0, 3, (2000, 5))  # what the backbones share about each cell
    z32 = cells + rng.normal(0, 1, (3, 2000, 5))
    z16 = z32 + rng.normal(0, 0.1, z32.shape)  # bf16-like noise on every logit
    flat = precision.check(z16, z32, T1)
    assert flat["cells"] == 2000
    assert flat["agreement"] < 0.995  # plain bf16 changes some votes
    rc = flat["recheck"]
    assert rc["agreement"] >= 0.995  # measured on the half that did not set the tolerances
    assert 0.0 < rc["rechecked_share"] < 0.3
    # what the engine computes with the stored tolerances, on new cells of the same kind
    cells = rng.normal(0, 3, (2000, 5))
    z32 = cells + rng.normal(0, 1, (3, 2000, 5))
    z16 = z32 + rng.normal(0, 0.1, z32.shape)
    z, mask = precision.rechecked(z16, z32, T1, np.array(rc["logit_tolerance"]), rc["proba_tolerance"])
    p = lambda zz: np.stack([np.exp(b) / np.exp(b).sum(-1, keepdims=True) for b in zz])  # noqa: E731
    plain = (vote(p(z16)).label == vote(p(z32)).label).mean()
    assert (vote(p(z)).label == vote(p(z32)).label).mean() >= 0.995 > plain
    assert (vote(p(z), "soft").label == vote(p(z32), "soft").label).mean() >= 0.995


def test_the_check_counts_referral_at_the_threshold():
    rng = np.random.default_rng(2)
    cells = rng.normal(0, 2, (1500, 4))
    z32 = cells + rng.normal(0, 1, (3, 1500, 4))
    z16 = z32 + rng.normal(0, 0.1, z32.shape)
    out = precision.check(z16, z32, T1, threshold=0.7)
    rc = out["recheck"]
    assert rc["threshold"] == 0.7 and rc["agreement"] >= 0.995
    # the same cells referred to an expert as in fp32, on new cells
    cells = rng.normal(0, 2, (1500, 4))
    z32 = cells + rng.normal(0, 1, (3, 1500, 4))
    z16 = z32 + rng.normal(0, 0.1, z32.shape)
    z, _ = precision.rechecked(z16, z32, T1, np.array(rc["logit_tolerance"]), rc["proba_tolerance"], 0.7)
    p = lambda zz: np.stack([np.exp(b) / np.exp(b).sum(-1, keepdims=True) for b in zz])  # noqa: E731
    conf = lambda zz: vote(p(zz)).confidence  # noqa: E731
    plain = ((conf(z16) < 0.7) == (conf(z32) < 0.7)).mean()
    assert ((conf(z) < 0.7) == (conf(z32) < 0.7)).mean() >= 0.995 > plain


def test_no_noise_means_nothing_rechecked_but_ties():
    z = np.random.default_rng(1).normal(0, 3, (3, 50, 4))
    out = precision.check(z, z, T1)
    assert out["agreement"] == 1.0 and out["recheck"]["agreement"] == 1.0
    assert out["recheck"]["logit_tolerance"] == [0.0, 0.0, 0.0]


@pytest.mark.skipif(not openvino_available(), reason="openvino is in requirements.txt")
def test_engine_rechecks_in_fp32_only_where_the_checkpoint_measured_it(trained, dataset):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    paths = [it.path for it in dataset]
    n_b = len(ckpt["backbones"])
    fp32 = EnsembleModel(ckpt, digest, device="cpu", precision="fp32", runtime="openvino")
    assert fp32.recheck is None and fp32.precision_label == "fp32"
    # everything within the tolerance: every cell is recomputed, so the output is fp32's
    everything = {"logit_tolerance": [1e9] * n_b, "proba_tolerance": 1.0, "ood_tolerance": 1e9, "agreement": 1.0,
                  "rechecked_share": 1.0}
    ck = dict(ckpt, bf16_agreement=0.9, bf16_agreement_runtime="openvino", bf16_recheck=everything)
    model = EnsembleModel(ck, digest, device="cpu", runtime="openvino")
    if not cpu_supports_bf16():
        assert model.precision == "fp32" and model.recheck is None
        return
    assert model.precision == "bf16" and model.precision_label == "bf16 + fp32 re-check"
    got, ref = model.predict_proba(paths), fp32.predict_proba(paths)
    np.testing.assert_allclose(got.stacked, ref.stacked, atol=1e-5)
    np.testing.assert_allclose(got.ood_scores, ref.ood_scores, atol=1e-3)
    # a re-check measured without the out-of-distribution score: bf16 could move a cell across its threshold
    unmeasured = dict(ck, bf16_recheck={k: v for k, v in everything.items() if k != "ood_tolerance"})
    assert EnsembleModel(unmeasured, digest, device="cpu", runtime="openvino").precision == "fp32"
    # a re-check that did not reach the agreement rule, or measured in another runtime: fp32
    weak = dict(ck, bf16_recheck=dict(everything, agreement=0.99))
    assert EnsembleModel(weak, digest, device="cpu", runtime="openvino").precision == "fp32"
    # ... even where plain bf16 agreed on every checked cell: a few hundred cells do not show 99.5 %
    lucky = dict(weak, bf16_agreement=1.0)
    assert EnsembleModel(lucky, digest, device="cpu", runtime="openvino").precision == "fp32"
    other = dict(ck, bf16_agreement_runtime="torch")
    assert EnsembleModel(other, digest, device="cpu", runtime="openvino").precision == "fp32"
    # no tolerance: plain bf16 everywhere but on tied votes (always re-checked)
    nothing = dict(everything, logit_tolerance=[0.0] * n_b, proba_tolerance=0.0, ood_tolerance=0.0)
    plain = EnsembleModel(dict(ck, bf16_recheck=nothing), digest, device="cpu", runtime="openvino")
    bf16 = EnsembleModel(ckpt, digest, device="cpu", precision="bf16", runtime="openvino").predict_proba(paths)
    tops = bf16.stacked.argmax(2)
    tied = np.array([sorted(np.bincount(t).tolist())[-2:] in ([1, 1], [2, 2]) for t in tops.T])
    got = plain.predict_proba(paths).stacked
    np.testing.assert_allclose(got[:, ~tied], bf16.stacked[:, ~tied], atol=1e-6)
