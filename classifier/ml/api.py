"""What the Django side calls: ``train``, ``load_ensemble``, ``EnsembleModel.predict``.

Paths, labels and sha256s in; checkpoints, probabilities and votes out. Never imports Django.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .checkpoint import save_checkpoint, versions
from .device import cpu_supports_bf16, default_precision, resolve_device, set_threads
from .engine import CellPrediction, EnsembleModel, Probabilities, load_ensemble  # noqa: F401 (re-exported)
from .errors import TrainingCancelled
from .features import FeatureCache, FeatureExtractor, FeatureKey, feature_dim, featurise, load_features, make_extractor
from .finetune import finetune_tail, supports_finetune, tail_features
from .recipes import input_size_for, recipe
from .registry import ENSEMBLES, MissingWeightsError, get_spec, resolve_ensemble  # noqa: F401
from .runtime import compile_extractor, resolve_runtime
from .training import fit_temperature, seed_everything, softmax_np, stratified_split, train_head, tta_logits
from .voting import abstention_curve, choose_threshold, default_min_agreement, vote

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


def _check_cancel(should_cancel):
    if should_cancel is not None and should_cancel():
        raise TrainingCancelled()


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
    stopping, temperature scaling and the default abstention threshold. ``threads``: CPU threads
    to use (None: leave the process setting alone; the worker sets it once).
    ``config_overrides``: recipe keys to change (see :mod:`classifier.ml.recipes`).
    ``runtime``: how the frozen layers run on the CPU (see :mod:`classifier.ml.runtime`)."""
    t_start = time.time()
    classes = list(classes)
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError("classes must be at least two distinct class codes")
    cfg = recipe(mode, **dict(config_overrides or {}, **({"epochs": epochs} if epochs else {})))
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
    emit = progress or (lambda e: None)
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
    views = list(cfg["views"])
    tta = list(cfg["tta_views"])
    tta_idx = [views.index(v) for v in tta]
    finetune = bool(cfg.get("finetune_epochs")) and cfg["mode"] in ("finetune", "default") and cfg.get("finetune", True)

    # 1. featurise (only what the cache lacks)
    backbone_info, caches, extractors, featurised = {}, {}, {}, {}
    for b in backbones:
        _check_cancel(should_cancel)
        spec = get_spec(b)
        size = input_size_for(cfg, b, spec.input_size)
        cache_kind = "prefix" if finetune else cfg["features"]
        ext, ident = make_extractor(b, cache_kind, weights=weights, input_size=size, seed=seed)
        if finetune and not supports_finetune(ext.backbone):
            raise ValueError(f"mode='finetune' is not available for {b} (only the EfficientNet-Lite backbones)")
        key = FeatureKey(b, ident, cache_kind, size, tuple(views), cache_precision)
        cache = FeatureCache(cache_dir, key)
        t0 = time.time()
        missing = any(not cache.has(s) for s in shas)
        run_ext = (compile_extractor(ext, size, runtime=rt, device=dev, precision=precision,
                                     normalisation=(spec.mean, spec.std)) if missing else ext)
        n_new = featurise(
            [(it.sha256, it.path) for it in items], extractor=run_ext, spec=spec, cache=cache, device=dev,
            batch_size=128 if dev.type == "cuda" else 32,
            progress=lambda d, n, b=b: emit({"stage": "featurising", "backbone": b, "done": d, "total": n}),
            should_cancel=should_cancel,
        )
        featurised[b] = {"new": n_new, "seconds": round(time.time() - t0, 2)}
        backbone_info[b] = {
            "weights": weights, "weights_sha256": ident if weights else None, "features": cfg["features"],
            "input_size": size, "feature_dim": feature_dim(spec, cfg["features"]), "feature_key": key.slug,
        }
        caches[b], extractors[b] = cache, ext

    # 2. heads (and, when fine-tuning, the last blocks on cached prefix maps)
    history: list[dict] = []
    heads, temps, val_probs, metrics_bb, finetuned = {}, {}, {}, {}, {}
    t_heads = time.time()
    for bi, b in enumerate(backbones):
        _check_cancel(should_cancel)

        def on_epoch(r, b=b):
            history.append(dict(r, backbone=b))
            emit(dict(r, stage="training", backbone=b))

        X = load_features(caches[b], shas)
        maps = None
        if finetune:
            maps = X
            X = tail_features(extractors[b].backbone, maps, cfg["features"], dev, precision)
        fit = train_head(X[tr_idx], y[tr_idx], X[va_idx][:, tta_idx], y[va_idx], n_classes=len(classes),
                         config=cfg, seed=seed + bi, on_epoch=on_epoch, should_cancel=should_cancel)
        if finetune:
            emit({"stage": "finetuning", "backbone": b})
            del X
            bb, fit = finetune_tail(extractors[b].backbone, fit.head, maps[tr_idx], y[tr_idx],
                                    maps[va_idx][:, tta_idx], y[va_idx], n_classes=len(classes), config=cfg,
                                    seed=seed + bi, device=dev, precision=precision, on_epoch=on_epoch,
                                    should_cancel=should_cancel)
            finetuned[b] = bb
            del maps
        heads[b] = fit.head
        temps[b] = fit_temperature(fit.val_logits, y[va_idx])
        val_probs[b] = softmax_np(fit.val_logits, temps[b])
        metrics_bb[b] = {
            "val_accuracy": float((fit.val_logits.argmax(1) == y[va_idx]).mean()) if len(va_idx) else None,
            "best_epoch": fit.best_epoch, "temperature": temps[b],
        }
    final = {b: FeatureExtractor(finetuned.get(b, extractors[b].backbone), cfg["features"]).eval() for b in backbones}
    heads_seconds = time.time() - t_heads

    # 3. vote on the validation split: metrics and the default abstention threshold
    emit({"stage": "calibrating"})
    n_b = len(backbones)
    min_agree = default_min_agreement(n_b)
    metrics: dict = {"per_backbone": metrics_bb, "featurised": featurised, "n_train": int(len(tr_idx)),
                     "n_val": int(len(va_idx)), "heads_seconds": round(heads_seconds, 2)}
    default_threshold = 0.0
    if len(va_idx):
        stacked = np.stack([val_probs[b] for b in backbones])
        res = vote(stacked, "majority")
        curve = abstention_curve(stacked, y[va_idx], min_agreement=min_agree)
        default_threshold = choose_threshold(curve, float(cfg["target_accuracy"]), float(cfg["max_referred"]))
        accepted = next(c for c in curve if c["threshold"] == default_threshold)
        metrics.update({
            "val_accuracy_majority": float((res.label == y[va_idx]).mean()),
            "val_accuracy_soft": float((stacked.mean(0).argmax(1) == y[va_idx]).mean()),
            "val_accuracy_accepted": accepted["accuracy_accepted"],
            "val_referred": accepted["referred"],
            "abstention_curve": curve,
        })

    # 4. bf16 on this CPU: do its votes agree with fp32 on real (validation) images, in the
    #    runtime the engine will use, alone and with the fp32 re-check near decisions (see
    #    classifier.ml.precision)? Unmeasured (too few cells, no bf16) means fp32.
    bf16_check = None
    if dev.type == "cpu" and cpu_supports_bf16() and len(va_idx) >= MIN_PRECISION_CHECK_CELLS:
        _check_cancel(should_cancel)
        emit({"stage": "checking_precision"})
        bf16_check = _precision_check(items, va_idx, backbones, final, heads, temps, tta, dev, rt,
                                      {b: backbone_info[b]["input_size"] for b in backbones}, default_threshold)
    bf16_agreement = bf16_check["agreement"] if bf16_check else None
    metrics["bf16_agreement"] = bf16_agreement
    metrics["precision_check"] = dict(bf16_check or {"agreement": None, "cells": 0}, runtime=rt)

    # 5. checkpoint
    _check_cancel(should_cancel)
    emit({"stage": "saving"})
    backbone_state = None
    if weights is None or finetuned:  # random init / fine-tuned: ship the backbone weights
        backbone_state = {b: final[b].backbone.state_dict() for b in backbones if weights is None or b in finetuned}
    ckpt = {
        "classes": classes,
        "backbones": backbones,
        "config": cfg,
        "heads": {b: heads[b].state_dict() for b in backbones},
        "temperature": temps,
        "default_threshold": float(default_threshold),
        "min_agreement": min_agree,
        "backbone_info": backbone_info,
        "backbone_state": backbone_state,
        "bf16_agreement": bf16_agreement,
        "bf16_agreement_runtime": rt,
        "bf16_recheck": bf16_check["recheck"] if bf16_check else None,
        "metrics": _jsonable(metrics),
        "versions": versions(),
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path, digest = save_checkpoint(ckpt, out_dir)
    metrics["total_seconds"] = round(time.time() - t_start, 2)
    emit({"stage": "done", "checkpoint_sha256": digest})
    return TrainResult(checkpoint_path=path, checkpoint_sha256=digest, classes=classes, backbones=backbones,
                       metrics=metrics, config=cfg, history=history)


def _precision_check(items, va_idx, backbones, extractors, heads, temps, tta, dev, runtime, sizes, threshold) -> dict:
    """bf16 against fp32 on at most ``PRECISION_CHECK_CELLS`` validation cells, in ``runtime``:
    :func:`classifier.ml.precision.check` on the TTA-averaged logits of each backbone."""
    from .features import extract_views
    from .precision import check
    from .preprocess import batched_resized

    va_items = [items[i] for i in va_idx[:PRECISION_CHECK_CELLS]]
    paths = [it.path for it in va_items]
    logits = {}
    for prec in ("bf16", "fp32"):
        per = []
        for b in backbones:
            spec = get_spec(b)
            run_ext = compile_extractor(extractors[b], sizes[b], runtime=runtime, device=dev, precision=prec,
                                        normalisation=(spec.mean, spec.std))
            parts = [extract_views(run_ext, spec, batch[sizes[b]], tta, dev, prec)
                     for _, batch in batched_resized(paths, [sizes[b]], 32)]
            per.append(tta_logits(heads[b], torch.cat(parts)).numpy())
        logits[prec] = np.stack(per)
    return check(logits["bf16"], logits["fp32"], np.array([temps[b] for b in backbones]), threshold)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


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
    from .heads import build_head

    cfg = recipe(mode, **(config_overrides or {}))
    if cfg["feature_precision"] == "auto":
        cfg["feature_precision"] = default_precision(torch.device("cpu"))
    names = resolve_ensemble(backbones)
    classes = list(classes)
    torch.manual_seed(seed)
    info, heads, states = {}, {}, {}
    for b in names:
        spec = get_spec(b)
        size = input_size_for(cfg, b, spec.input_size)
        dim = feature_dim(spec, cfg["features"])
        if weights is None:
            ext, _ = make_extractor(b, cfg["features"], weights=None, input_size=size, seed=seed)
            states[b] = ext.backbone.state_dict()
        from .registry import weights_sha256

        info[b] = {"weights": weights, "weights_sha256": weights_sha256(b) if weights else None,
                   "features": cfg["features"], "input_size": size, "feature_dim": dim, "feature_key": None}
        heads[b] = build_head(cfg, dim, len(classes)).eval().state_dict()
    ckpt = {
        "classes": classes, "backbones": names, "config": cfg, "heads": heads,
        "temperature": {b: 1.0 for b in names}, "default_threshold": 0.0,
        "min_agreement": default_min_agreement(len(names)), "backbone_info": info,
        "backbone_state": states or None, "bf16_agreement": None, "metrics": {"untrained": True},
        "versions": versions(), "seed": seed, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return save_checkpoint(ckpt, out_dir, stem="untrained")
