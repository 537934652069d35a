"""Training heads on cached features: split, class balance, early stopping, calibration."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import TrainingCancelled as Cancelled
from .heads import build_head


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def stratified_split(keys: Sequence[str], labels: Sequence[int], *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split by a seeded hash of each key (e.g. the image sha256).

    Returns (train indices, validation indices). Each class keeps at least one training item;
    classes with at least 2 items give at least one validation item."""
    labels = np.asarray(labels)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        order = sorted(idx, key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).hexdigest())
        n_val = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val.extend(order[:n_val])
        train.extend(order[n_val:])
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes) for an imbalanced label set."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


@dataclass
class HeadFit:
    head: nn.Module
    history: list[dict]
    val_logits: np.ndarray  # [M, C] TTA-averaged logits of the validation items
    best_epoch: int


def tta_logits(head: nn.Module, X: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """X [N, V, D] -> logits averaged over the V views [N, C]."""
    head.eval()
    n, v, d = X.shape
    outs = []
    with torch.inference_mode():
        for s in range(0, n, batch):
            xb = X[s:s + batch]
            outs.append(head(xb.reshape(-1, d)).reshape(xb.shape[0], v, -1).mean(1))
    return torch.cat(outs) if outs else torch.zeros(0)


def train_head(
    X_train: np.ndarray,  # [N, V, D]
    y_train: np.ndarray,
    X_val: np.ndarray,  # [M, V, D] (M may be 0)
    y_val: np.ndarray,
    *,
    n_classes: int,
    config: dict,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> HeadFit:
    """Train one head. Each epoch every training item contributes one randomly drawn cached
    view (augmentation); validation uses the mean over all views (test-time augmentation).
    Class-weighted cross-entropy; AdamW with cosine decay; the epoch of best validation
    accuracy (then lowest loss) is kept."""
    g = seed_everything(seed)
    Xtr, ytr = as_tensors(X_train, y_train)
    Xva, yva = as_tensors(X_val, y_val)
    d = Xtr.shape[2]
    head = build_head(config, d, n_classes)
    head.set_standardisation(Xtr.reshape(-1, d))
    history, best_epoch = fit_epochs(head, Xtr, ytr, Xva, yva, n_classes=n_classes, config=config, generator=g,
                                     on_epoch=on_epoch, should_cancel=should_cancel)
    head.eval()
    val_logits = tta_logits(head, Xva).numpy() if len(yva) else np.zeros((0, n_classes), np.float32)
    return HeadFit(head=head, history=history, val_logits=val_logits, best_epoch=best_epoch)


def as_tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached features [N, V, D] as float32 and labels [N] as int64 tensors."""
    return (torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
            torch.from_numpy(np.asarray(y, dtype=np.int64)))


class BestEpoch:
    """The epoch of the best validation score so far, (accuracy, loss): higher accuracy, then
    lower loss; a copy of the model's weights then; early stopping after ``patience`` epochs
    without a better score (None: never)."""

    def __init__(self, model: nn.Module, *, score: tuple[float, float] = (-1.0, float("inf")),
                 patience: int | None = None, keep_now: bool = False):
        self.model, self.score, self.patience = model, score, patience
        self.epoch, self.since, self.state = 0, 0, None
        if keep_now:
            self.state = self._copy()

    def _copy(self) -> dict:
        return {k: t.detach().clone() for k, t in self.model.state_dict().items()}

    def update(self, epoch: int, score: tuple[float, float]) -> bool:
        """Keep this epoch's weights when its score is the best; True when training should stop."""
        if score[0] > self.score[0] or (score[0] == self.score[0] and score[1] < self.score[1]):
            self.score, self.epoch, self.since = score, epoch, 0
            self.state = self._copy()
            return False
        self.since += 1
        return self.patience is not None and self.since >= self.patience

    def restore(self) -> None:
        """Load the best epoch's weights back into the model (nothing when none was kept)."""
        if self.state is not None:
            self.model.load_state_dict(self.state)


def fit_epochs(head: nn.Module, Xtr: torch.Tensor, ytr: torch.Tensor, Xva: torch.Tensor, yva: torch.Tensor, *,
               n_classes: int, config: dict, generator: torch.Generator,
               on_epoch: Callable[[dict], None] | None = None,
               should_cancel: Callable[[], bool] | None = None) -> tuple[list[dict], int]:
    """The epoch loop of :func:`train_head`: train, validate, keep the best epoch (early stopping
    after ``patience`` epochs without a better one), then load its weights back. Returns the
    per-epoch records and the best epoch."""
    epochs = int(config["epochs"])
    bs = int(config.get("batch_size", 128))
    opt, sched = head_optimizer(head, config, steps=epochs * math.ceil(Xtr.shape[0] / bs))
    cw = class_weights(ytr.numpy(), n_classes) if config.get("class_weights", True) else None
    smoothing = float(config.get("label_smoothing", 0.0))
    best = BestEpoch(head, patience=int(config.get("patience", epochs)))
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        if should_cancel and should_cancel():
            raise Cancelled()
        loss = train_one_epoch(head, Xtr, ytr, optimizer=opt, scheduler=sched, generator=generator, batch_size=bs,
                               class_weight=cw, label_smoothing=smoothing,
                               skip_single=config["head"] == "paper")  # BatchNorm needs 2 samples
        rec = {"epoch": epoch, "epochs": epochs, "loss": loss}
        if len(yva):
            rec.update(evaluate(head, Xva, yva))
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
        score = (rec["val_accuracy"], rec["val_loss"]) if len(yva) else (0.0, rec["loss"])
        if best.update(epoch, score):
            break
    best.restore()
    return history, best.epoch


def head_optimizer(head: nn.Module, config: dict, *, steps: int):
    """AdamW with a one-cycle schedule (warm-up over the first 10% of ``steps``, then cosine decay)."""
    opt = torch.optim.AdamW(head.parameters(), lr=config.get("lr", 1e-3), weight_decay=config.get("weight_decay", 1e-4))
    return opt, one_cycle(opt, config.get("lr", 1e-3), steps=max(steps, 1))


WARMUP = 0.1  # share of the optimizer steps the one-cycle schedule warms up over


def one_cycle(optimizer, max_lr, *, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """The one-cycle schedule over ``steps`` optimizer steps: warm-up over the first
    :data:`WARMUP` of them, then cosine decay. PyTorch ends the warm-up at step
    ``WARMUP * steps - 1``; at exactly 10 steps that is step 0, a warm-up of no length, and it
    divides by zero. There the warm-up ends at step 0.1 instead, as it does with 11 steps (every
    other number of steps keeps its schedule)."""
    pct_start = WARMUP
    if float(WARMUP * steps) - 1 == 0:
        pct_start = 1.1 / steps
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=pct_start)


def train_one_epoch(head: nn.Module, X: torch.Tensor, y: torch.Tensor, *, optimizer, scheduler,
                    generator: torch.Generator, batch_size: int, class_weight: torch.Tensor | None,
                    label_smoothing: float, skip_single: bool) -> float:
    """One pass over the training items ``X`` [N, V, D], each with one randomly drawn cached view
    (augmentation); the scheduler steps per batch. ``skip_single``: leave out a last batch of one item
    (BatchNorm needs two). Returns the mean training loss."""
    head.train()
    n, v, _ = X.shape
    perm = torch.randperm(n, generator=generator)
    views = torch.randint(0, v, (n,), generator=generator)
    total, count = 0.0, 0
    for s in range(0, n, batch_size):
        idx = perm[s:s + batch_size]
        if len(idx) < 2 and skip_single:
            continue
        xb = X[idx, views[idx]]
        loss = F.cross_entropy(head(xb), y[idx], weight=class_weight, label_smoothing=label_smoothing)
        optimizer_step(loss, optimizer=optimizer, scheduler=scheduler)
        total += loss.item() * len(idx)
        count += len(idx)
    return total / max(count, 1)


def optimizer_step(loss: torch.Tensor, *, optimizer, scheduler) -> None:
    """Backpropagate ``loss``, step the optimizer, then the (per-batch) learning-rate schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


def evaluate(head: nn.Module, X: torch.Tensor, y: torch.Tensor) -> dict:
    """Validation loss and accuracy of the mean over all views (test-time augmentation)."""
    logits = tta_logits(head, X)
    return {"val_loss": F.cross_entropy(logits, y).item(), "val_accuracy": (logits.argmax(1) == y).float().mean().item()}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising validation NLL of softmax(z/T)."""
    if len(y) == 0:
        return 1.0
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 200))
    nll = [F.cross_entropy(z / T, t).item() for T in grid]
    return float(grid[int(np.argmin(nll))])


def softmax_np(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
