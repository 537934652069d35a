"""Inference-only rewrites of a frozen backbone: fold batch norm into the preceding convolution."""

from __future__ import annotations

import torch
from torch import nn

# (conv attribute, bn attribute) pairs where the module's forward applies bn(conv(x)) directly.
_PAIRS = (
    ("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"),
    ("_conv_stem", "_bn0"), ("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"), ("_conv_head", "_bn1"), ("conv4", "bn4"), ("skip", "skipbn"),
)


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.bias = nn.Parameter(bias, requires_grad=False)


def _last_conv(m: nn.Module) -> nn.Conv2d | None:
    """The convolution whose output a module returns (itself, or a separable conv's pointwise)."""
    if isinstance(m, nn.Conv2d):
        return m
    pw = getattr(m, "pointwise", None)
    return pw if isinstance(pw, nn.Conv2d) and type(m).__name__ == "SeparableConv2d" else None


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d; returns how many."""
    n = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                c, bn = _last_conv(module._modules[a]), module._modules[b]
                if c is not None and type(bn) is nn.BatchNorm2d:
                    _fold(c, bn)
                    module._modules[b] = nn.Identity()
                    n += 1
        for cname, bname in _PAIRS:
            c, bn = getattr(module, cname, None), getattr(module, bname, None)
            c = _last_conv(c) if isinstance(c, nn.Module) else None
            if c is not None and type(bn) is nn.BatchNorm2d:
                _fold(c, bn)
                setattr(module, bname, nn.Identity())
                n += 1
    return n


def inline_symmetric_padding(model: nn.Module) -> int:
    """EfficientNet-Lite's "same" convolutions pad with a separate ZeroPad2d (a copy of the
    activations) before the convolution; where that padding is symmetric, let the convolution
    pad instead. Returns how many were rewritten."""
    n = 0
    for m in model.modules():
        pad = getattr(m, "static_padding", None)
        if isinstance(m, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and m.padding in ((0, 0), 0, "valid"):
                m.padding = (top, left)
                m.static_padding = nn.Identity()
                n += 1
    return n


def optimise_for_inference(model: nn.Module) -> nn.Module:
    fold_batchnorm(model)
    inline_symmetric_padding(model)
    return model
