"""The stages the training and inference functions are made of, each on its own: the optimizer
step, the best-epoch tracker, the head's and the tail's epoch loops, the trainable tail, the
engine's per-batch scoring, its near-decision rule and its out-of-distribution arrays, and the
training run's metrics; and the one-cycle schedule both loops use."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from classifier.ml import api
from classifier.ml.checkpoint import load_checkpoint
from classifier.ml.engine import EnsembleModel
from classifier.ml.errors import TrainingCancelled
from classifier.ml.features import FeatureExtractor
from classifier.ml.finetune import (TailModel, evaluate_tail, finetune_epochs, finetune_tail, tail_features,
                                    trainable_tail)
from classifier.ml.heads import build_head
from classifier.ml.ood import COLOUR_SIZE
from classifier.ml.preprocess import batched_resized
from classifier.ml.recipes import recipe
from classifier.ml.registry import build_backbone
from classifier.ml.training import (BestEpoch, evaluate, fit_epochs, one_cycle, optimizer_step, softmax_np,
                                    train_head)


def _features(n, seed=0, views=2, dim=8):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = (rng.normal(size=(n, views, dim)) + y[:, None, None]).astype(np.float32)  # learnable
    return torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))


def _head(config, dim=8):
    torch.manual_seed(0)
    return build_head(config, dim, 3)


# -- training stages --------------------------------------------------------------------------

def test_optimizer_step_clears_old_gradients_then_steps_optimizer_and_schedule():
    layer = nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    layer.weight.grad = torch.full_like(layer.weight, 100.0)  # stale: must not be accumulated
    before = layer.weight.detach().clone()
    x = torch.tensor([[1.0, 2.0]])
    optimizer_step(layer(x).sum(), optimizer=opt, scheduler=sched)
    assert torch.equal(layer.weight.grad, x)
    assert torch.allclose(layer.weight, before - 0.1 * x)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_best_epoch_prefers_accuracy_then_lower_loss_and_restores_its_weights():
    model = nn.Linear(1, 1)
    best = BestEpoch(model, patience=2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert best.update(1, (0.5, 1.0)) is False and best.epoch == 1
    with torch.no_grad():
        model.weight.fill_(2.0)
    assert best.update(2, (0.5, 0.5)) is False and best.epoch == 2  # same accuracy, lower loss
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert best.update(3, (0.5, 0.9)) is False and best.epoch == 2  # worse: one epoch without progress
    assert best.update(4, (0.4, 0.1)) is True  # patience 2 reached
    best.restore()
    assert model.weight.item() == 2.0


def test_best_epoch_without_patience_never_stops_and_can_start_from_the_current_weights():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(7.0)
    best = BestEpoch(model, score=(0.8, 0.2), keep_now=True)
    with torch.no_grad():
        model.weight.fill_(0.0)
    assert not any(best.update(e, (0.1, 9.0)) for e in range(1, 50))
    best.restore()
    assert best.epoch == 0 and model.weight.item() == 7.0


def test_restore_without_a_kept_epoch_leaves_the_model_alone():
    model = nn.Linear(1, 1)
    w = model.weight.detach().clone()
    BestEpoch(model).restore()
    assert torch.equal(model.weight, w)


def test_fit_epochs_reports_every_epoch_and_leaves_the_best_epochs_weights():
    config = recipe("default", epochs=6, batch_size=8)
    Xtr, ytr = _features(24)
    Xva, yva = _features(9, seed=1, views=1)
    head = _head(config)
    head.set_standardisation(Xtr.reshape(-1, 8))
    seen = []
    history, best_epoch = fit_epochs(head, Xtr, ytr, Xva, yva, n_classes=3, config=config,
                                     generator=torch.Generator().manual_seed(0), on_epoch=seen.append)
    assert [r["epoch"] for r in history] == list(range(1, 7)) and seen == history
    assert {"loss", "val_loss", "val_accuracy", "epochs"} <= set(history[0])
    kept = history[best_epoch - 1]
    assert kept["val_accuracy"] == max(r["val_accuracy"] for r in history)
    assert evaluate(head, Xva, yva) == pytest.approx({"val_loss": kept["val_loss"], "val_accuracy": kept["val_accuracy"]})


def test_fit_epochs_stops_after_patience_and_honours_cancelling():
    config = recipe("default", epochs=30, batch_size=8, patience=1)
    Xtr, ytr = _features(12)
    head = _head(config)
    head.set_standardisation(Xtr.reshape(-1, 8))
    Xva, yva = Xtr[:0, :1], ytr[:0]  # no validation: the training loss decides
    history, best_epoch = fit_epochs(head, Xtr, ytr, Xva, yva, n_classes=3, config=config,
                                     generator=torch.Generator().manual_seed(0))
    assert 1 <= best_epoch <= len(history) <= 30
    if len(history) < 30:  # stopped early: the last epoch did not beat the best one
        assert history[-1]["loss"] >= history[best_epoch - 1]["loss"]
    calls = iter([False, False, True])
    seen = []
    with pytest.raises(TrainingCancelled):
        fit_epochs(_head(config), Xtr, ytr, Xva, yva, n_classes=3, config=dict(config, patience=30),
                   generator=torch.Generator().manual_seed(0), on_epoch=seen.append, should_cancel=lambda: next(calls))
    assert len(seen) == 2  # cancelled before the third epoch


# -- fine-tuning stages ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", None, input_size=64)
    maps = FeatureExtractor(backbone, "prefix").eval()(torch.randn(12, 3, 64, 64)).detach().numpy()
    return backbone, maps.reshape(6, 2, *maps.shape[1:]).astype(np.float16)


def test_trainable_tail_opens_only_the_tail_and_closes_it_even_on_errors(lite):
    backbone, _ = lite
    tail = {id(p) for p in backbone.tail_parameters()}
    with trainable_tail(backbone) as params:
        assert {id(p) for p in params} == tail
        assert all(p.requires_grad == (id(p) in tail) for p in backbone.parameters())
        assert 0 < len(tail) < len(list(backbone.parameters()))
    assert not any(p.requires_grad for p in backbone.parameters())
    with pytest.raises(RuntimeError), trainable_tail(backbone):
        raise RuntimeError("interrupted")
    assert not any(p.requires_grad for p in backbone.parameters())


def test_finetune_epochs_keep_the_best_epoch_counting_the_weights_before_as_epoch_0(lite):
    import copy

    backbone, maps = lite
    config = recipe("finetune", finetune_epochs=2, finetune_batch_size=4)
    cpu = torch.device("cpu")
    feats = tail_features(backbone, maps, config["features"], cpu, "fp32")
    model = TailModel(copy.deepcopy(backbone), _head(config, feats.shape[-1]), config["features"])
    y = np.array([0, 1, 2, 0, 1, 2])
    yva = torch.from_numpy(y[:3])
    before = evaluate_tail(model, maps[:3, :1], yva, device=cpu, precision="fp32")[1]
    with trainable_tail(model.backbone) as params:
        history, best_epoch = finetune_epochs(model, params, maps, y, maps[:3, :1], yva, n_classes=3, config=config,
                                              generator=torch.Generator().manual_seed(0), device=cpu,
                                              precision="fp32")
    assert [r["phase"] for r in history] == ["finetune", "finetune"] and 0 <= best_epoch <= 2
    acc, neg_loss = evaluate_tail(model, maps[:3, :1], yva, device=cpu, precision="fp32")[1]
    if best_epoch == 0:
        assert (acc, neg_loss) == pytest.approx(before)
    else:
        assert (acc, -neg_loss) == pytest.approx((history[best_epoch - 1]["val_accuracy"],
                                                  history[best_epoch - 1]["val_loss"]))


# -- inference stages ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fp32_model(trained):
    result, _, _ = trained
    ckpt, digest = load_checkpoint(result.checkpoint_path)
    return EnsembleModel(ckpt, digest, device="cpu", precision="fp32", runtime="torch")


def test_score_batch_gives_the_logits_predict_proba_calibrates(fp32_model, dataset):
    paths = [it.path for it in dataset[:5]]
    m = fp32_model
    sizes = sorted(set(m.input_sizes.values()) | {COLOUR_SIZE})
    [(_, batch)] = list(batched_resized(paths, sizes, 8))
    z, feats, assessment = m._score_batch(batch, m.backbones, m.tta_views, scored=True, threshold=None)
    assert z.shape == (len(m.backbones), 5, len(m.classes)) and set(feats) == set(m.backbones)
    proba = m.predict_proba(paths)
    for i, b in enumerate(m.backbones):
        np.testing.assert_allclose(softmax_np(z[i], m.temperature[b]), proba.per_backbone[b], atol=1e-6)
    np.testing.assert_allclose(assessment.score, proba.ood_scores, atol=1e-6)
    unscored = m._score_batch(batch, m.backbones, m.tta_views, scored=False, threshold=None)[2]
    assert unscored is None


def test_near_decision_follows_the_checkpoints_tolerances(fp32_model):
    m = fp32_model
    n_b, n_c = len(m.backbones), len(m.classes)
    z = np.zeros((n_b, 4, n_c))
    z[:, :, 0] = 5.0  # every backbone sure of class 0: far from any decision
    z[0, 1] = [1.0, 0.95, 0.0]  # backbone 0 barely prefers class 0 on cell 1
    m.recheck = {"logit": {b: 0.1 for b in m.backbones}, "proba": 0.0, "ood": None}
    try:
        redo = m._near_decision(z, m.backbones, None, threshold=0.0)
        assert redo.shape == (n_b, 4)
        assert redo[0, 1] and redo.sum() == 1
        m.recheck = {"logit": {b: 1e9 for b in m.backbones}, "proba": 1.0, "ood": None}
        assert m._near_decision(z, m.backbones, None, threshold=0.0).all()
    finally:
        m.recheck = None


def test_ood_arrays_join_batches_and_are_empty_without_any(fp32_model):
    m = fp32_model
    k, n_b = m.ood.k, len(m.ood.backbones)
    empty = m._ood_arrays([])
    assert empty["ood_scores"].shape == (0,) and empty["neighbour_labels"].shape == (0, n_b, k)
    c = len(m.classes)
    assert m.ood.features.support_m and empty["support"].shape == (0, c)  # class support is fitted by training
    a = SimpleNamespace(score=np.array([1.0, 2.0]), distance=np.array([0.1, 0.2]),
                        neighbour_labels=np.zeros((2, n_b, k), np.int64), support=np.zeros((2, c)))
    b = SimpleNamespace(score=np.array([3.0]), distance=np.array([0.3]), neighbour_labels=np.ones((1, n_b, k), np.int64),
                        support=np.ones((1, c)))
    joined = m._ood_arrays([a, b])
    assert joined["ood_scores"].tolist() == [1.0, 2.0, 3.0] and joined["ood_distance"].tolist() == [0.1, 0.2, 0.3]
    assert joined["neighbour_labels"][:, 0, 0].tolist() == [0, 0, 1]
    assert joined["support"][:, 0].tolist() == [0, 0, 1]
    a.support = None  # a batch without it (never mixed in practice): no support at all, not a misaligned one
    assert m._ood_arrays([a, b])["support"] is None


# -- the training run's metrics -------------------------------------------------------------------

def test_train_metrics_gather_the_stages_results():
    plan = SimpleNamespace(backbones=["a", "b"], tr_idx=np.arange(7), va_idx=np.arange(3), runtime="torch")
    fits = {b: SimpleNamespace(metrics={"best_epoch": i}) for i, b in enumerate(plan.backbones)}
    feats = {b: SimpleNamespace(stats={"new": 1}) for b in plan.backbones}
    calibration = SimpleNamespace(metrics={"val_accuracy_majority": 0.9})
    m = api.train_metrics(plan, feats, fits, calibration, None, None, heads_seconds=1.23456)
    assert m["per_backbone"] == {"a": {"best_epoch": 0}, "b": {"best_epoch": 1}}
    assert m["featurised"] == {"a": {"new": 1}, "b": {"new": 1}}
    assert (m["n_train"], m["n_val"], m["heads_seconds"]) == (7, 3, 1.23)
    assert m["val_accuracy_majority"] == 0.9 and m["ood"] is None and m["bf16_agreement"] is None
    assert m["precision_check"] == {"agreement": None, "cells": 0, "runtime": "torch"}
    check = {"agreement": 0.996, "cells": 60, "recheck": {}}
    ood = SimpleNamespace(summary=lambda: {"k": 5})
    m = api.train_metrics(plan, feats, fits, calibration, ood, check, heads_seconds=0.0)
    assert m["bf16_agreement"] == 0.996 and m["ood"] == {"k": 5}
    assert m["precision_check"] == dict(check, runtime="torch") and "runtime" not in check


# -- the one-cycle schedule -------------------------------------------------------------------------

def _lrs(scheduler, steps):
    opt = scheduler.optimizer
    out = [opt.param_groups[0]["lr"]]
    for _ in range(steps - 1):
        opt.step()
        scheduler.step()
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("steps", [1, 2, 9, 11, 12, 20, 37, 100])
def test_one_cycle_is_torchs_ten_percent_warm_up_wherever_that_works(steps):
    def opt():
        return torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)

    ours = _lrs(one_cycle(opt(), 1e-3, steps=steps), steps)
    torchs = _lrs(torch.optim.lr_scheduler.OneCycleLR(opt(), max_lr=1e-3, total_steps=steps, pct_start=0.1), steps)
    assert ours == torchs


def test_ten_optimizer_steps_train_with_a_one_step_warm_up():
    # 10 epochs of one batch: torch's warm-up would end at step 0 and divide by zero
    lrs = _lrs(one_cycle(torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3), 1e-3, steps=10), 10)
    assert lrs[0] == pytest.approx(1e-3 / 25) and max(lrs) == lrs[1] > 0.9e-3
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))  # then cosine decay
    config = recipe("default", epochs=10, batch_size=128)
    X, y = _features(6)
    fit = train_head(X.numpy(), y.numpy(), X[:3, :1].numpy(), y[:3].numpy(), n_classes=3, config=config, seed=0)
    assert len(fit.history) == 10


def test_ten_fine_tuning_steps_train(lite):
    backbone, maps = lite
    config = recipe("finetune", finetune_epochs=5, finetune_batch_size=3)  # 5 epochs x 2 batches of 3
    feats = tail_features(backbone, maps, config["features"], torch.device("cpu"), "fp32")
    _, fit = finetune_tail(backbone, _head(config, feats.shape[-1]), maps, np.array([0, 1, 2, 0, 1, 2]),
                           maps[:3, :1], np.array([0, 1, 2]), n_classes=3, config=config, seed=0,
                           device=torch.device("cpu"), precision="fp32")
    assert len(fit.history) == 5


# -- the out-of-distribution bank and the bf16 check's held-out half ------------------------------

def test_fit_bank_standardises_the_leave_one_out_distances():
    from classifier.ml.ood import _fit_bank

    raw = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32) * 5
    fitted = _fit_bank(raw, 3, "cosine")
    np.testing.assert_allclose(np.linalg.norm(fitted.bank, axis=1), 1.0, atol=1e-3)  # unit vectors
    assert fitted.bank.dtype == np.float32 and fitted.loo.shape == (30,) and (fitted.loo > 0).all()
    assert np.median(fitted.loo_dz) == pytest.approx(0.0, abs=1e-6)  # (distance - median) / IQR
    assert fitted.distance[0] == pytest.approx(np.median(fitted.loo))
    euclid = _fit_bank(raw, 3, "euclidean")
    assert np.array_equal(euclid.bank, raw)


def test_held_out_agreement_counts_cells_and_rechecked_results():
    from classifier.ml.precision import _decisions, _held_out_agreement

    rng = np.random.default_rng(1)
    z32 = rng.normal(size=(3, 20, 4)) * 3
    temps = np.ones(3)
    fit, held = np.arange(20)[0::2], np.arange(20)[1::2]
    ref = _decisions(z32, temps, 0.5)
    same, redone = _held_out_agreement(z32.copy(), z32, temps, 0.5, fit, held, ref, None)
    assert same == 10  # bf16 = fp32: every held-out cell decides as fp32 does
    assert 0 <= redone <= 3 * 10
    flipped = z32.copy()
    flipped[:, held] = -flipped[:, held]  # bf16 far off on the held-out cells, tolerances (from fit) zero
    same, _ = _held_out_agreement(flipped, z32, temps, 0.5, fit, held, ref, None)
    assert same < 10
