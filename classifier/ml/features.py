"""Frozen-backbone features and their on-disk cache.

Features of the frozen layers are computed once per (image sha256, backbone, weights sha256,
feature kind, input size, views, precision, preprocessing version) and stored one small
``.npy`` per image (``[n_views, dim]`` float16), written to a temporary file and
``os.replace``d so concurrent readers never see a partial file. Retraining after new labels
featurises only the images that are not in the cache yet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .device import autocast
from .errors import TrainingCancelled
from .io import atomic_write
from .colour import identity as colour_identity
from .preprocess import PREPROCESS_VERSION, VIEWS, Standardise, apply_view, batched_resized, normalise
from .registry import BackboneSpec, FeatureBackbone, build_backbone, get_spec, weights_sha256

FEATURE_VERSION = "f1"
FEATURE_KINDS = ("pooled", "multistage", "prefix")


def preprocess_identity(colour_standardisation: dict | None) -> str:
    """The preprocessing part of a feature-cache key: the decoding/resizing version, and the
    colour standardisation with its reference when there is one (features of plain images are
    never reused for standardised ones)."""
    ident = colour_identity(colour_standardisation)
    return f"{PREPROCESS_VERSION}+{ident}" if ident else PREPROCESS_VERSION


Cancelled = TrainingCancelled


def feature_dim(spec: BackboneSpec, kind: str) -> int:
    if kind == "pooled":
        return spec.feature_dim
    if kind == "multistage":
        return spec.multistage_dim
    if kind == "prefix":
        return 0  # a map, not a vector (fine-tuning cache)
    raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, not {kind!r}")


class FeatureExtractor(nn.Module):
    """Frozen backbone -> feature vector.

    ``pooled``: the network with its last layer dropped (the paper's features).
    ``multistage``: those, plus global average and max pooling of intermediate stages
    (texture such as granules lives in the middle stages).
    ``prefix``: the output map of the frozen prefix (the input of the fine-tuned tail)."""

    def __init__(self, backbone: FeatureBackbone, kind: str):
        super().__init__()
        if kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, not {kind!r}")
        self.backbone = backbone
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "prefix":
            return self.backbone.forward_prefix(x)
        pooled, maps = self.backbone(x)
        return self.pool(pooled, maps, self.kind)

    @staticmethod
    def pool(pooled: torch.Tensor, maps, kind: str) -> torch.Tensor:
        if kind == "pooled":
            return pooled.float()
        parts = [pooled.float()]
        for m in maps:
            m = m.float()
            parts.append(m.mean((2, 3)))
            parts.append(m.amax((2, 3)))
        return torch.cat(parts, 1)


@dataclass(frozen=True)
class FeatureKey:
    backbone: str
    weights: str  # sha256 of the weights file, or "random-seed<N>" for weights=None
    kind: str
    input_size: int
    views: tuple[str, ...]
    precision: str
    preprocess: str = PREPROCESS_VERSION
    version: str = FEATURE_VERSION

    @property
    def slug(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"{self.backbone}-{self.kind}-{self.input_size}-{hashlib.sha256(blob).hexdigest()[:16]}"


class FeatureCache:
    """One folder per :class:`FeatureKey`, one ``<sha256>.npy`` per image."""

    def __init__(self, root: Path | str, key: FeatureKey):
        self.key = key
        self.dir = Path(root) / key.slug
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():
            atomic_write(meta, lambda tmp: tmp.write_bytes(json.dumps(asdict(key), indent=1).encode()))

    def path(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / f"{sha256}.npy"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def load(self, sha256: str) -> np.ndarray:
        return np.load(self.path(sha256), allow_pickle=False)

    def save(self, sha256: str, arr: np.ndarray) -> None:
        p = self.path(sha256)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(arr, dtype=np.float16)
        atomic_write(p, lambda tmp: _save_npy(tmp, data))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, arr, allow_pickle=False)


@torch.inference_mode()
def extract_views(
    extractor: FeatureExtractor,
    spec: BackboneSpec,
    x_uint8: torch.Tensor,
    views: Sequence[str],
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """uint8 [B,3,S,S] -> features [B, n_views, D] (float32, on the CPU); for the ``prefix``
    kind, maps [B, n_views, C, H, W] (float16)."""
    x = x_uint8.to(device, non_blocking=True)
    if not getattr(extractor, "takes_uint8", False):  # else the compiled graph normalises
        x = normalise(x, spec.mean, spec.std)
    compiled = getattr(extractor, "is_openvino", False)  # precision is fixed in the compiled graph
    outs = []
    for v in views:
        xv = apply_view(x, v)
        if compiled:
            f = extractor(xv)
        else:
            with autocast(device, precision):
                f = extractor(xv.contiguous(memory_format=torch.channels_last))
        outs.append(f.half().contiguous() if extractor.kind == "prefix" else f.float())
    return torch.stack(outs, 1).cpu()


def featurise(
    items: Sequence[tuple[str, object]],  # (sha256, path or PIL image)
    *,
    extractor: FeatureExtractor,
    spec: BackboneSpec,
    cache: FeatureCache,
    device: torch.device,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    standardise: Standardise = None,
) -> int:
    """Compute and cache the features of the items not cached yet. Returns how many were computed.
    ``standardise``: the colour standardisation the cache key's ``preprocess`` names."""
    key = cache.key
    seen, todo = set(), []
    for sha, src in items:
        if sha not in seen and not cache.has(sha):
            todo.append((sha, src))
        seen.add(sha)
    total = len(todo)
    if progress:
        progress(0, total)
    if not total:
        return 0
    done = 0
    if device.type == "cuda":
        extractor.to(device)
    for start, batch in batched_resized([s for _, s in todo], [key.input_size], batch_size, standardise=standardise):
        if should_cancel and should_cancel():
            raise Cancelled()
        x = batch[key.input_size]
        if device.type == "cuda":
            x = x.pin_memory()
        feats = extract_views(extractor, spec, x, key.views, device, key.precision).numpy()
        for i, f in enumerate(feats):
            cache.save(todo[start + i][0], f)
        done += len(feats)
        if progress:
            progress(done, total)
    return total


def load_features(cache: FeatureCache, shas: Sequence[str]) -> np.ndarray:
    """Cached features of ``shas`` as float32 [N, n_views, D] (float16 maps for ``prefix``)."""
    arr = np.stack([cache.load(s) for s in shas]) if len(shas) else np.zeros((0,), np.float16)
    return arr if cache.key.kind == "prefix" else arr.astype(np.float32)


def make_extractor(
    name: str, kind: str, *, weights: str | None, input_size: int | None = None, seed: int = 0
) -> tuple[FeatureExtractor, str]:
    """Build the frozen extractor of a backbone; returns it and its weights identity."""
    spec = get_spec(name)
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            bb = build_backbone(name, None, input_size=input_size)
        ident = f"random-seed{seed}"
    else:
        ident = weights_sha256(name)
        bb = build_backbone(name, weights, input_size=input_size)
    ext = FeatureExtractor(bb, kind).eval()
    for p in ext.parameters():
        p.requires_grad_(False)
    ext.to(memory_format=torch.channels_last)
    return ext, ident


ALL_VIEWS = VIEWS
