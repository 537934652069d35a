"""Classification heads put on top of the frozen feature extractors.

Every head standardises its input with statistics of the training features (buffers, so
the head's state dict is self-contained) and returns logits.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_TYPES = ("paper", "linear", "mlp")


class PaperHead(nn.Sequential):
    """Yu et al.: three fully-connected and two batch-norm layers on the frozen backbone."""

    def __init__(self, in_dim: int, n_classes: int, hidden: tuple[int, int] = (512, 256), dropout: float = 0.5):
        super().__init__(
            nn.Linear(in_dim, hidden[0]),
            nn.BatchNorm1d(hidden[0]),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]),
            nn.BatchNorm1d(hidden[1]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[1], n_classes),
        )


class MLPHead(nn.Sequential):
    def __init__(self, in_dim: int, n_classes: int, hidden: int = 1024, dropout: float = 0.5):
        super().__init__(
            nn.Dropout(0.2),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )


class Head(nn.Module):
    """Standardise -> body. ``mean``/``std`` are buffers (saved in the state dict)."""

    def __init__(self, head_type: str, in_dim: int, n_classes: int, **kwargs):
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head type must be one of {HEAD_TYPES}, not {head_type!r}")
        self.head_type = head_type
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if head_type == "paper":
            self.body = PaperHead(in_dim, n_classes, **kwargs)
        elif head_type == "mlp":
            self.body = MLPHead(in_dim, n_classes, **kwargs)
        else:
            self.body = nn.Sequential(nn.Dropout(kwargs.get("dropout", 0.0)), nn.Linear(in_dim, n_classes))

    def set_standardisation(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def build_head(config: dict, in_dim: int, n_classes: int) -> Head:
    kwargs = dict(config.get("head_kwargs") or {})
    if "hidden" in kwargs and isinstance(kwargs["hidden"], list):
        kwargs["hidden"] = tuple(kwargs["hidden"])
    return Head(config["head"], in_dim, n_classes, **kwargs)
