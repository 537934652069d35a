"""What the Django side calls: ``train``, ``load_ensemble``, ``EnsembleModel.predict``.

Paths, labels and sha256s in; checkpoints, probabilities and votes out. Never imports Django.

Training is a list of stages, each a function with explicit arguments (like torchvision's
``references/classification``)::

    plan = plan_training(items, classes=..., ...)
    feats = {b: featurise_backbone(plan, b, cache_dir) for b in plan.backbones}
    fits = {b: fit_backbone(plan, b, feats[b], i) for i, b in enumerate(plan.backbones)}
    calibration = calibrate(plan, fits)
    colour = colour_of(plan, cache_dir)
    ood = fit_ood_stage(plan, fits, colour)
    precision = check_precision(plan, fits, calibration, ood, colour)
    metrics = train_metrics(plan, feats, fits, calibration, ood, precision, heads_seconds=...)
    save(checkpoint_dict(plan, feats, fits, calibration, ood, precision, metrics), out_dir)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .alignment import feature_stats
from .checkpoint import save_checkpoint, versions
from .device import cpu_supports_bf16, default_precision, resolve_device, set_threads
from .engine import CellPrediction, EnsembleModel, Probabilities, load_ensemble  # noqa: F401 (re-exported)
from .errors import TrainingCancelled
from .colour import check_reference, standardiser
from .features import (FeatureCache, FeatureExtractor, FeatureKey, extract_views, feature_dim, featurise,
                       load_features, make_extractor, preprocess_identity)
from .finetune import finetune_tail, supports_finetune, tail_features
from .heads import build_head
from .io import json_clean
from .ood import COLOUR_SIZE, SUPPORT_M, OODCheck, colour_features, fit_ood_check
from .precision import check, ood_measures
from .preprocess import batched_resized
from .recipes import input_size_for, recipe
from .registry import ENSEMBLES, MissingWeightsError, get_spec, resolve_ensemble, weights_sha256  # noqa: F401
from .runtime import compile_extractor, resolve_runtime
from .training import fit_temperature, seed_everything, softmax_np, stratified_split, train_head, tta_logits
from .voting import Threshold, abstention_curve, default_min_agreement, default_threshold, fit_threshold, vote

# bf16 is checked against fp32 on this many validation cells (at most), and not below the minimum
PRECISION_CHECK_CELLS = 480
MIN_PRECISION_CHECK_CELLS = 50

__all__ = [
    "TrainItem", "TrainResult", "TrainingCancelled", "CellPrediction", "EnsembleModel", "Probabilities",
    "train", "load_ensemble", "MissingWeightsError", "ENSEMBLES",
]


@dataclass
class TrainItem:
    path: Path
    sha256: str
    label: str  # class code


@dataclass
class TrainResult:
    checkpoint_path: Path
    checkpoint_sha256: str
    classes: list[str]
    backbones: list[str]
    metrics: dict
    config: dict
    history: list[dict] = field(default_factory=list)
    threshold: Threshold | None = None  # the confidence threshold the version applies


@dataclass
class TrainPlan:
    """Everything the stages share: the unique items, labels, split, recipe and where it runs."""

    items: list[TrainItem]
    shas: list[str]
    y: np.ndarray
    classes: list[str]
    backbones: list[str]
    tr_idx: np.ndarray
    va_idx: np.ndarray
    cfg: dict
    device: torch.device
    runtime: str
    precision: str
    cache_precision: str
    weights: str | None
    seed: int
    finetune: bool
    emit: Callable[[dict], None]
    should_cancel: Callable[[], bool] | None
    history: list[dict] = field(default_factory=list)

    @property
    def standardise(self):
        """The colour standardisation every image goes through before featurising (None: none)."""
        return standardiser(self.cfg.get("colour_standardisation"))

    @property
    def preprocess(self) -> str:
        """The preprocessing identity in the feature cache's keys."""
        return preprocess_identity(self.cfg.get("colour_standardisation"))

    @property
    def tta_idx(self) -> list[int]:
        return [list(self.cfg["views"]).index(v) for v in self.cfg["tta_views"]]

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise TrainingCancelled()


@dataclass
class Featurised:
    """One backbone's cached features: where they are and how they were made."""

    cache: FeatureCache
    extractor: FeatureExtractor
    info: dict  # checkpoint's backbone_info entry
    stats: dict  # {"new": images featurised now, "seconds": ...}


@dataclass
class BackboneFit:
    head: torch.nn.Module
    temperature: float
    val_probs: np.ndarray  # [M, C] calibrated
    metrics: dict
    final: FeatureExtractor  # the extractor the engine will run (fine-tuned or frozen)
    finetuned: bool
    ood_train: np.ndarray  # [N_train, D] features (mean over the test-time views) for the OOD bank
    ood_val: np.ndarray  # [M, D]


@dataclass
class Calibration:
    threshold: Threshold
    min_agreement: int
    metrics: dict


def train(
    items: Sequence[TrainItem],
    *,
    classes: Sequence[str],
    ensemble: str | Sequence[str] = "offline",
    mode: str = "default",
    epochs: int | None = None,
    cache_dir: Path,
    out_dir: Path,
    device: str = "auto",
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    weights: str | None = "imagenet",
    seed: int = 0,
    config_overrides: dict | None = None,
    threads: int | None = None,
    runtime: str = "auto",
) -> TrainResult:
    """Train the heads of an ensemble on cached frozen features and write a checkpoint.

    ``mode``: ``"default"`` (multi-stage frozen features, cached symmetric views as augmentation,
    linear head), ``"frozen"`` (the paper's recipe: pooled features, 3 FC + 2 BN head) or
    ``"finetune"`` (default + the last two stages of each Lite trained on cached maps).
    ``weights=None`` random-initialises the backbones (tests only; never implicit).
    A validation split (by a seeded hash of the sha256) is held out of training for early
    stopping, temperature scaling, the default abstention threshold and the threshold of the
    out-of-distribution score. ``threads``: CPU threads to use (None: leave the process setting
    alone; the worker sets it once). ``config_overrides``: recipe keys to change (see
    :mod:`classifier.ml.recipes`). ``runtime``: how the frozen layers run on the CPU (see
    :mod:`classifier.ml.runtime`)."""
    t_start = time.time()
    plan = plan_training(items, classes=classes, ensemble=ensemble, mode=mode, epochs=epochs, device=device,
                         progress=progress, should_cancel=should_cancel, weights=weights, seed=seed,
                         config_overrides=config_overrides, threads=threads, runtime=runtime)
    feats = {b: featurise_backbone(plan, b, cache_dir=cache_dir) for b in plan.backbones}
    t_heads = time.time()
    fits = {b: fit_backbone(plan, b, feats[b], index=i) for i, b in enumerate(plan.backbones)}
    heads_seconds = time.time() - t_heads
    calibration = calibrate(plan, fits)
    colour = colour_of(plan, cache_dir=cache_dir)
    ood = fit_ood_stage(plan, fits, colour)
    precision_check = check_precision(plan, fits, calibration, ood, colour)
    plan.check_cancel()
    plan.emit({"stage": "saving"})
    metrics = train_metrics(plan, feats, fits, calibration, ood, precision_check, heads_seconds=heads_seconds)
    ckpt = checkpoint_dict(plan, feats, fits, calibration, ood, precision_check, metrics)
    path, digest = save_checkpoint(ckpt, out_dir)
    metrics["total_seconds"] = round(time.time() - t_start, 2)
    plan.emit({"stage": "done", "checkpoint_sha256": digest})
    return TrainResult(checkpoint_path=path, checkpoint_sha256=digest, classes=plan.classes, backbones=plan.backbones,
                       metrics=metrics, config=plan.cfg, history=plan.history, threshold=calibration.threshold)


def plan_training(items: Sequence[TrainItem], *, classes: Sequence[str], ensemble, mode: str, epochs: int | None,
                  device: str, progress, should_cancel, weights: str | None, seed: int,
                  config_overrides: dict | None, threads: int | None, runtime: str) -> TrainPlan:
    """Check the inputs, drop duplicate images, split train / validation, resolve the recipe,
    the device, the runtime and the feature precision."""
    classes = list(classes)
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError("classes must be at least two distinct class codes")
    cfg = recipe(mode, **dict(config_overrides or {}, **({"epochs": epochs} if epochs else {})))
    check_reference(cfg.get("colour_standardisation"))
    backbones = resolve_ensemble(ensemble)
    items = list(items)
    unknown = sorted({it.label for it in items} - set(classes))
    if unknown:
        raise ValueError(f"labels not in classes: {unknown}")
    if not items:
        raise ValueError("no training items")
    dev = resolve_device(device)
    if dev.type == "cpu" and threads is not None:
        set_threads(threads)
    seed_everything(seed)

    # unique images (the same sha256 twice is one image)
    by_sha: dict[str, TrainItem] = {}
    for it in items:
        prev = by_sha.get(it.sha256)
        if prev is not None and prev.label != it.label:
            raise ValueError(f"image {it.sha256} has two labels: {prev.label!r} and {it.label!r}")
        by_sha[it.sha256] = it
    items = list(by_sha.values())
    shas = [it.sha256 for it in items]
    y = np.array([classes.index(it.label) for it in items], dtype=np.int64)
    tr_idx, va_idx = stratified_split(shas, y, fraction=float(cfg["val_fraction"]), seed=seed)

    rt = resolve_runtime(runtime, dev)
    precision = cfg["feature_precision"]
    if precision == "auto":  # OpenVINO runs fp32 fast enough on the CPU: train on exact features
        precision = "fp32" if rt == "openvino" else default_precision(dev)
    cfg["feature_precision"] = precision
    # fp32 features are the same function in every runtime; reduced precision is not
    cache_precision = precision if precision == "fp32" or rt == "torch" else f"{precision}@{rt}"
    finetune = bool(cfg.get("finetune_epochs")) and cfg["mode"] in ("finetune", "default") and cfg.get("finetune", True)
    return TrainPlan(items=items, shas=shas, y=y, classes=classes, backbones=backbones, tr_idx=tr_idx, va_idx=va_idx,
                     cfg=cfg, device=dev, runtime=rt, precision=precision, cache_precision=cache_precision,
                     weights=weights, seed=seed, finetune=finetune, emit=progress or (lambda e: None),
                     should_cancel=should_cancel)


def featurise_backbone(plan: TrainPlan, b: str, *, cache_dir: Path) -> Featurised:
    """Compute and cache the frozen features of one backbone (only what the cache lacks)."""
    plan.check_cancel()
    cfg = plan.cfg
    spec = get_spec(b)
    size = input_size_for(cfg, b, spec.input_size)
    cache_kind = "prefix" if plan.finetune else cfg["features"]
    ext, ident = make_extractor(b, cache_kind, weights=plan.weights, input_size=size, seed=plan.seed)
    if plan.finetune and not supports_finetune(ext.backbone):
        raise ValueError(f"mode='finetune' is not available for {b} (only the EfficientNet-Lite backbones)")
    key = FeatureKey(b, ident, cache_kind, size, tuple(cfg["views"]), plan.cache_precision, preprocess=plan.preprocess)
    cache = FeatureCache(cache_dir, key)
    t0 = time.time()
    missing = any(not cache.has(s) for s in plan.shas)
    run_ext = (compile_extractor(ext, size, runtime=plan.runtime, device=plan.device, precision=plan.precision,
                                 normalisation=(spec.mean, spec.std)) if missing else ext)
    n_new = featurise(
        [(it.sha256, it.path) for it in plan.items], extractor=run_ext, spec=spec, cache=cache, device=plan.device,
        batch_size=128 if plan.device.type == "cuda" else 32,
        progress=lambda d, n: plan.emit({"stage": "featurising", "backbone": b, "done": d, "total": n}),
        should_cancel=plan.should_cancel, standardise=plan.standardise,
    )
    info = {
        "weights": plan.weights, "weights_sha256": ident if plan.weights else None, "features": cfg["features"],
        "input_size": size, "feature_dim": feature_dim(spec, cfg["features"]), "feature_key": key.slug,
    }
    return Featurised(cache=cache, extractor=ext, info=info, stats={"new": n_new, "seconds": round(time.time() - t0, 2)})


def fit_backbone(plan: TrainPlan, b: str, feats: Featurised, *, index: int) -> BackboneFit:
    """Train one backbone's head on its cached features (and, when fine-tuning, its last blocks
    on the cached prefix maps), then its temperature on the validation split."""
    plan.check_cancel()
    cfg, tr, va, y = plan.cfg, plan.tr_idx, plan.va_idx, plan.y
    tta_idx = plan.tta_idx

    def on_epoch(r):
        plan.history.append(dict(r, backbone=b))
        plan.emit(dict(r, stage="training", backbone=b))

    X = load_features(feats.cache, plan.shas)
    backbone = feats.extractor.backbone
    maps = None
    if plan.finetune:
        maps = X
        X = tail_features(backbone, maps, cfg["features"], plan.device, plan.precision)
    fit = train_head(X[tr], y[tr], X[va][:, tta_idx], y[va], n_classes=len(plan.classes), config=cfg,
                     seed=plan.seed + index, on_epoch=on_epoch, should_cancel=plan.should_cancel)
    if plan.finetune:
        plan.emit({"stage": "finetuning", "backbone": b})
        backbone, fit = finetune_tail(backbone, fit.head, maps[tr], y[tr], maps[va][:, tta_idx], y[va],
                                      n_classes=len(plan.classes), config=cfg, seed=plan.seed + index,
                                      device=plan.device, precision=plan.precision, on_epoch=on_epoch,
                                      should_cancel=plan.should_cancel)
        # the OOD bank lives in the fine-tuned features the engine will compute
        X = tail_features(backbone, maps[:, tta_idx], cfg["features"], plan.device, plan.precision)
        del maps
        ood_feats = X.mean(1)
    else:
        ood_feats = X[:, tta_idx].mean(1)
    temperature = fit_temperature(fit.val_logits, y[va])
    metrics = {
        "val_accuracy": float((fit.val_logits.argmax(1) == y[va]).mean()) if len(va) else None,
        "best_epoch": fit.best_epoch, "temperature": temperature,
    }
    return BackboneFit(head=fit.head, temperature=temperature, val_probs=softmax_np(fit.val_logits, temperature),
                       metrics=metrics, final=FeatureExtractor(backbone, cfg["features"]).eval(),
                       finetuned=plan.finetune, ood_train=ood_feats[tr], ood_val=ood_feats[va])


def calibrate(plan: TrainPlan, fits: dict[str, BackboneFit]) -> Calibration:
    """Vote on the validation split: the ensemble's validation metrics and the version's
    abstention threshold (:func:`classifier.ml.voting.fit_threshold`: the recipe's target
    accuracy on accepted cells within its referral budget where the validation split has enough
    cells, else the conservative default; never 0)."""
    plan.check_cancel()
    plan.emit({"stage": "calibrating"})
    min_agree = default_min_agreement(len(plan.backbones))
    y_val = plan.y[plan.va_idx]
    if not len(y_val):
        threshold = default_threshold("no validation cells")
        return Calibration(threshold=threshold, min_agreement=min_agree, metrics=threshold.as_dict())
    stacked = np.stack([fits[b].val_probs for b in plan.backbones])
    res = vote(stacked, "majority")
    curve = abstention_curve(stacked, y_val, min_agreement=min_agree)
    threshold = fit_threshold(curve, n_cells=len(y_val), target_accuracy=float(plan.cfg["target_accuracy"]),
                              max_referred=float(plan.cfg["max_referred"]))
    applied = abstention_curve(stacked, y_val, min_agreement=min_agree, thresholds=[threshold.value])[0]
    return Calibration(threshold=threshold, min_agreement=min_agree, metrics={
        "val_accuracy_majority": float((res.label == y_val).mean()),
        "val_accuracy_soft": float((stacked.mean(0).argmax(1) == y_val).mean()),
        "val_accuracy_accepted": applied["accuracy_accepted"],
        "val_referred": applied["referred"],
        "abstention_curve": curve,
        **threshold.as_dict(),
    })


def colour_of(plan: TrainPlan, *, cache_dir: Path) -> np.ndarray:
    """[N, 40] colour statistics of every image (:func:`classifier.ml.ood.colour_features`) as
    the model sees it (after the colour standardisation, if any), cached like the features."""
    plan.check_cancel()
    cache = FeatureCache(cache_dir, FeatureKey("colour", "pixels", "colour", COLOUR_SIZE, ("id",), "fp32",
                                               preprocess=plan.preprocess))
    todo = [i for i, s in enumerate(plan.shas) if not cache.has(s)]
    paths = [plan.items[i].path for i in todo]
    for start, batch in batched_resized(paths, [COLOUR_SIZE], 64, standardise=plan.standardise):
        for j, row in enumerate(colour_features(batch[COLOUR_SIZE])):
            cache.save(plan.shas[todo[start + j]], row[None])
    return load_features(cache, plan.shas)[:, 0]


def fit_ood_stage(plan: TrainPlan, fits: dict[str, BackboneFit], colour: np.ndarray) -> OODCheck:
    """The out-of-distribution check: nearest training cells in each backbone's features and in
    the colour statistics, their thresholds on the validation split (see
    :mod:`classifier.ml.ood`)."""
    plan.check_cancel()
    plan.emit({"stage": "fitting_ood"})
    cfg = plan.cfg
    return fit_ood_check({b: fits[b].ood_train for b in plan.backbones}, {b: fits[b].ood_val for b in plan.backbones},
                         colour[plan.tr_idx], colour[plan.va_idx], train_labels=plan.y[plan.tr_idx],
                         val_labels=plan.y[plan.va_idx], n_classes=len(plan.classes),
                         k=int(cfg.get("ood_k", 5)), quantile=float(cfg.get("ood_quantile", 97.5)), seed=plan.seed,
                         support_m=int(cfg.get("ood_support_m", SUPPORT_M)))


def check_precision(plan: TrainPlan, fits: dict[str, BackboneFit], calibration: Calibration,
                    ood: OODCheck | None, colour: np.ndarray) -> dict | None:
    """bf16 on this CPU: do its votes (and referrals, and out-of-distribution flags) agree with
    fp32 on real validation images, in the runtime the engine will use, alone and with the fp32
    re-check near decisions (see :mod:`classifier.ml.precision`)? Unmeasured (too few cells,
    no bf16, not the CPU) is None: the engine then runs fp32."""
    if (plan.device.type != "cpu" or not cpu_supports_bf16()
            or len(plan.va_idx) < MIN_PRECISION_CHECK_CELLS):
        return None
    plan.check_cancel()
    plan.emit({"stage": "checking_precision"})
    va_items = [plan.items[i] for i in plan.va_idx[:PRECISION_CHECK_CELLS]]
    paths = [it.path for it in va_items]
    views = list(plan.cfg["tta_views"])
    standardise = plan.standardise
    logits, features = {}, {}
    for prec in ("bf16", "fp32"):
        per, per_feats = [], {}
        for b in plan.backbones:
            spec = get_spec(b)
            size = input_size_for(plan.cfg, b, spec.input_size)
            run_ext = compile_extractor(fits[b].final, size, runtime=plan.runtime, device=plan.device, precision=prec,
                                        normalisation=(spec.mean, spec.std))
            parts = [extract_views(run_ext, spec, batch[size], views, plan.device, prec)
                     for _, batch in batched_resized(paths, [size], 32, standardise=standardise)]
            f = torch.cat(parts)
            per.append(tta_logits(fits[b].head, f).numpy())
            per_feats[b] = f.mean(1).numpy()
        logits[prec] = np.stack(per)
        features[prec] = per_feats
    measures = None
    if ood is not None:  # the score and its distance alone (which decides the neighbours' rule)
        measures = ood_measures(ood, features["bf16"], features["fp32"], colour[plan.va_idx[:PRECISION_CHECK_CELLS]])
    return check(logits["bf16"], logits["fp32"], np.array([fits[b].temperature for b in plan.backbones]),
                 calibration.threshold.value, ood=measures)


def train_metrics(plan: TrainPlan, feats: dict[str, Featurised], fits: dict[str, BackboneFit],
                  calibration: Calibration, ood: OODCheck | None, precision_check: dict | None, *,
                  heads_seconds: float) -> dict:
    """The run's metrics (the checkpoint's and the result's): per backbone, what was featurised,
    the split, the vote's validation metrics, the bf16 check and the out-of-distribution summary."""
    return dict(
        {"per_backbone": {b: fits[b].metrics for b in plan.backbones},
         "featurised": {b: feats[b].stats for b in plan.backbones},
         "n_train": int(len(plan.tr_idx)), "n_val": int(len(plan.va_idx)), "heads_seconds": round(heads_seconds, 2)},
        **calibration.metrics,
        bf16_agreement=precision_check["agreement"] if precision_check else None,
        precision_check=dict(precision_check or {"agreement": None, "cells": 0}, runtime=plan.runtime),
        ood=ood.summary() if ood else None,
    )


def checkpoint_dict(plan: TrainPlan, feats: dict[str, Featurised], fits: dict[str, BackboneFit],
                    calibration: Calibration, ood: OODCheck | None, precision_check: dict | None,
                    metrics: dict) -> dict:
    """The checkpoint: plain tensors and builtins (loaded with ``weights_only=True``)."""
    backbones = plan.backbones
    backbone_state = None
    if plan.weights is None or plan.finetune:  # random init / fine-tuned: ship the backbone weights
        backbone_state = {b: fits[b].final.backbone.state_dict() for b in backbones}
    return {
        "classes": plan.classes,
        "backbones": backbones,
        "config": plan.cfg,
        "heads": {b: fits[b].head.state_dict() for b in backbones},
        "temperature": {b: fits[b].temperature for b in backbones},
        "default_threshold": float(calibration.threshold.value),
        "threshold_source": calibration.threshold.source,
        "threshold_why": calibration.threshold.why,
        "min_agreement": calibration.min_agreement,
        "backbone_info": {b: feats[b].info for b in backbones},
        "backbone_state": backbone_state,
        "bf16_agreement": precision_check["agreement"] if precision_check else None,
        "bf16_agreement_runtime": plan.runtime,
        "bf16_recheck": precision_check["recheck"] if precision_check else None,
        "ood": ood.state_dict() if ood is not None else None,
        # the training cells' feature statistics (the aligned best guess of a new source's cells)
        "feature_stats": {b: {k: torch.from_numpy(v) for k, v in feature_stats(fits[b].ood_train).items()}
                          for b in backbones},
        # the training cells' class frequencies (the class-balanced aligned best guess)
        "class_prior": torch.from_numpy(np.bincount(plan.y[plan.tr_idx], minlength=len(plan.classes))
                                        .astype(np.float32) / max(len(plan.tr_idx), 1)),
        "metrics": json_clean(metrics),
        "versions": versions(),
        "seed": plan.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def untrained_checkpoint(
    backbones: str | Sequence[str],
    classes: Sequence[str],
    *,
    out_dir: Path,
    mode: str = "default",
    weights: str | None = "imagenet",
    seed: int = 0,
    config_overrides: dict | None = None,
) -> tuple[Path, str]:
    """A checkpoint with randomly initialised heads (same cost as a trained one): for
    benchmarks and smoke tests, never for predictions anyone reads."""
    cfg = recipe(mode, **(config_overrides or {}))
    if cfg["feature_precision"] == "auto":
        cfg["feature_precision"] = default_precision(torch.device("cpu"))
    names = resolve_ensemble(backbones)
    classes = list(classes)
    torch.manual_seed(seed)
    threshold = default_threshold("untrained heads")
    info, heads, states = {}, {}, {}
    for b in names:
        spec = get_spec(b)
        size = input_size_for(cfg, b, spec.input_size)
        dim = feature_dim(spec, cfg["features"])
        if weights is None:
            ext, _ = make_extractor(b, cfg["features"], weights=None, input_size=size, seed=seed)
            states[b] = ext.backbone.state_dict()
        info[b] = {"weights": weights, "weights_sha256": weights_sha256(b) if weights else None,
                   "features": cfg["features"], "input_size": size, "feature_dim": dim, "feature_key": None}
        heads[b] = build_head(cfg, dim, len(classes)).eval().state_dict()
    ckpt = {
        "classes": classes, "backbones": names, "config": cfg, "heads": heads,
        "temperature": {b: 1.0 for b in names}, "default_threshold": threshold.value,
        "threshold_source": threshold.source, "threshold_why": threshold.why,
        "min_agreement": default_min_agreement(len(names)), "backbone_info": info,
        "backbone_state": states or None, "bf16_agreement": None, "metrics": {"untrained": True},
        "versions": versions(), "seed": seed, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return save_checkpoint(ckpt, out_dir, stem="untrained")
