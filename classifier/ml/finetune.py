"""Partial fine-tuning of the last blocks, on cached activations.

The frozen prefix of a backbone (everything before its last stages) is run once per image and
view; its output maps are cached like features. The tail (last stages + head convolution) and
the classification head are then trained on those maps: an epoch costs only the tail's forward
and backward passes, so fine-tuning fits on a CPU. Batch-norm statistics stay frozen (eval
mode); their affine parameters are trained.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .device import autocast
from .errors import TrainingCancelled
from .features import FeatureExtractor
from .training import BestEpoch, HeadFit, class_weights, one_cycle, optimizer_step, seed_everything


def supports_finetune(backbone: nn.Module) -> bool:
    return hasattr(backbone, "forward_tail") and hasattr(backbone, "forward_prefix")


class TailModel(nn.Module):
    """cached prefix maps -> logits (tail of the backbone, multi-stage pooling, head)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, kind: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.kind = kind

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        pooled, taps = self.backbone.forward_tail(maps)
        return FeatureExtractor.pool(pooled, taps, self.kind)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(maps))


@torch.inference_mode()
def tail_features(backbone: nn.Module, maps: np.ndarray, kind: str, device: torch.device, precision: str,
                  batch: int = 64) -> np.ndarray:
    """Frozen-tail features of cached maps [N, V, C, H, W] -> [N, V, D]."""
    backbone.eval().to(device)
    n, v = maps.shape[:2]
    flat = maps.reshape(n * v, *maps.shape[2:])
    out = []
    for s in range(0, len(flat), batch):
        x = torch.from_numpy(flat[s:s + batch]).to(device).float().contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            pooled, taps = backbone.forward_tail(x)
            out.append(FeatureExtractor.pool(pooled, taps, kind).float().cpu())
    return torch.cat(out).reshape(n, v, -1).numpy()


def _tta_logits(model: TailModel, maps: np.ndarray, device, precision, batch: int = 64) -> torch.Tensor:
    model.eval()
    n, v = maps.shape[:2]
    flat = maps.reshape(n * v, *maps.shape[2:])
    out = []
    with torch.inference_mode():
        for s in range(0, len(flat), batch):
            x = torch.from_numpy(flat[s:s + batch]).to(device).float().contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out.append(model(x).float().cpu())
    return torch.cat(out).reshape(n, v, -1).mean(1) if out else torch.zeros(0)


def finetune_tail(
    backbone: nn.Module,
    head: nn.Module,
    maps_train: np.ndarray,  # [N, V, C, H, W] float16
    y_train: np.ndarray,
    maps_val: np.ndarray,  # [M, V', C, H, W] (the test-time views)
    y_val: np.ndarray,
    *,
    n_classes: int,
    config: dict,
    seed: int,
    device: torch.device,
    precision: str,
    on_epoch: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[nn.Module, HeadFit]:
    """Train the backbone's tail and the head (already fitted on frozen features) together.
    Returns the fine-tuned backbone (a copy) and the fit of the head."""
    g = seed_everything(seed)
    backbone = copy.deepcopy(backbone).to(device)
    model = TailModel(backbone, head.to(device), config["features"])
    yva = torch.from_numpy(np.asarray(y_val, dtype=np.int64))
    with trainable_tail(backbone) as tail_params:
        history, best_epoch = finetune_epochs(model, tail_params, maps_train, y_train, maps_val, yva,
                                              n_classes=n_classes, config=config, generator=g, device=device,
                                              precision=precision, on_epoch=on_epoch, should_cancel=should_cancel)
        model.eval()
    logits, _ = evaluate_tail(model, maps_val, yva, device=device, precision=precision)
    val_logits = logits.numpy() if logits is not None else np.zeros((0, n_classes), np.float32)
    return backbone.cpu(), HeadFit(head=model.head.cpu(), history=history, val_logits=val_logits, best_epoch=best_epoch)


@contextlib.contextmanager
def trainable_tail(backbone: nn.Module) -> Iterator[list[nn.Parameter]]:
    """Inside: only the tail's parameters (which it yields) of ``backbone`` take gradients; on
    leaving, none of them do."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    tail_params = list(backbone.tail_parameters())
    for p in tail_params:
        p.requires_grad_(True)
    try:
        yield tail_params
    finally:
        for p in backbone.parameters():
            p.requires_grad_(False)


def finetune_epochs(model: TailModel, tail_params: list, maps_train: np.ndarray, y_train: np.ndarray,
                    maps_val: np.ndarray, yva: torch.Tensor, *, n_classes: int, config: dict,
                    generator: torch.Generator, device: torch.device, precision: str,
                    on_epoch: Callable[[dict], None] | None = None,
                    should_cancel: Callable[[], bool] | None = None) -> tuple[list[dict], int]:
    """The epoch loop of :func:`finetune_tail`: train, validate, keep the best epoch (the weights
    before fine-tuning count as epoch 0), then load its weights back. Returns the per-epoch
    records and the best epoch."""
    epochs = int(config["finetune_epochs"])
    bs = int(config.get("finetune_batch_size", 32))
    steps = max(1, epochs * math.ceil(maps_train.shape[0] / bs))
    opt, sched = tail_optimizer(tail_params, model.head, config, steps=steps)
    cw = class_weights(y_train, n_classes).to(device) if config.get("class_weights", True) else None
    smoothing = float(config.get("label_smoothing", 0.0))
    ytr = torch.from_numpy(np.asarray(y_train, dtype=np.int64))

    def score() -> tuple[float, float]:  # (accuracy, loss), as BestEpoch compares them
        acc, neg_loss = evaluate_tail(model, maps_val, yva, device=device, precision=precision)[1]
        return acc, -neg_loss

    best = BestEpoch(model, score=score(), keep_now=True)
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        loss = finetune_one_epoch(model, maps_train, ytr, optimizer=opt, scheduler=sched, generator=generator,
                                  batch_size=bs, class_weight=cw, label_smoothing=smoothing, device=device,
                                  precision=precision, map_augment=config.get("map_augment", True),
                                  should_cancel=should_cancel)
        acc, val_loss = score()
        rec = {"epoch": epoch, "epochs": epochs, "loss": loss, "phase": "finetune"}
        if len(yva):
            rec.update(val_accuracy=acc, val_loss=val_loss)
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
        best.update(epoch, (acc, val_loss))
    best.restore()
    return history, best.epoch


def tail_optimizer(tail_params: list, head: nn.Module, config: dict, *, steps: int):
    """AdamW on the tail and (at ``finetune_head_lr_mult`` times the rate) the head, one-cycle schedule."""
    lr = float(config.get("finetune_lr", 1e-4))
    head_lr = lr * float(config.get("finetune_head_lr_mult", 10))
    opt = torch.optim.AdamW([
        {"params": tail_params, "lr": lr},
        {"params": [p for p in head.parameters() if p.requires_grad], "lr": head_lr},
    ], weight_decay=float(config.get("finetune_weight_decay", 1e-2)))
    return opt, one_cycle(opt, [lr, head_lr], steps=steps)


def finetune_one_epoch(model: TailModel, maps: np.ndarray, y: torch.Tensor, *, optimizer, scheduler,
                       generator: torch.Generator, batch_size: int, class_weight: torch.Tensor | None,
                       label_smoothing: float, device, precision: str, map_augment: bool = True,
                       should_cancel: Callable[[], bool] | None = None) -> float:
    """One pass over the training maps [N, V, C, H, W], one random view each (and, with ``map_augment``,
    one of the 8 symmetries of the square); the backbone's BatchNorm statistics stay frozen. Batches of
    one are left out. Returns the mean training loss."""
    model.backbone.eval()  # frozen BN statistics
    model.head.train()
    n, v = maps.shape[:2]
    perm = torch.randperm(n, generator=generator)
    views = torch.randint(0, v, (n,), generator=generator)
    total, count = 0.0, 0
    for s in range(0, n, batch_size):
        if should_cancel and should_cancel():
            raise TrainingCancelled()
        idx = perm[s:s + batch_size]
        if len(idx) < 2:
            continue
        x = torch.from_numpy(maps[idx.numpy(), views[idx].numpy()]).to(device).float()
        if map_augment:
            k = int(torch.randint(0, 4, (1,), generator=generator))
            x = torch.rot90(x, k, (2, 3))
            if torch.rand(1, generator=generator).item() < 0.5:
                x = x.flip(3)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        loss = F.cross_entropy(logits, y[idx].to(device), weight=class_weight, label_smoothing=label_smoothing)
        optimizer_step(loss, optimizer=optimizer, scheduler=scheduler)
        total += loss.item() * len(idx)
        count += len(idx)
    return total / max(count, 1)


def evaluate_tail(model: TailModel, maps: np.ndarray, y: torch.Tensor, *, device, precision: str):
    """(logits averaged over the test-time views, (accuracy, -loss)); (None, (0, 0)) without validation cells."""
    if not len(y):
        return None, (0.0, 0.0)
    logits = _tta_logits(model, maps, device, precision)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return logits, (acc, -loss)
