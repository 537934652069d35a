"""Training recipes (``mode`` of :func:`classifier.ml.api.train`). Measured in docs/ml.md."""

from __future__ import annotations

import copy

from .preprocess import VIEWS

# The paper's recipe (Yu et al.): frozen backbone with its last layer dropped, pooled features,
# 3 fully-connected + 2 batch-norm layers trained per backbone, majority vote.
FROZEN = {
    "mode": "frozen",
    "features": "pooled",
    "views": ["id"],  # cached views (augmentation while training the head)
    "tta_views": ["id"],  # views averaged at prediction time
    "input_size": None,  # None: the backbone's own; an int or {backbone: int} overrides
    "feature_precision": "auto",
    "head": "paper",
    "head_kwargs": {"hidden": [512, 256], "dropout": 0.5},
    "epochs": 60,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
    "patience": 20,
    "class_weights": True,
    "val_fraction": 0.1,
    "target_accuracy": 0.99,  # for the default abstention threshold (on the validation split)
    "max_referred": 0.2,
    # None, or {"method": "reinhard", "mean": [L, a, b], "std": [L, a, b]}: every image's colour is
    # standardised to that reference before featurising, in training and inference alike
    # (classifier.ml.colour); part of the feature cache's key
    "colour_standardisation": None,
}

# The default recipe: richer frozen features (pooled + intermediate stages), all eight
# symmetric views cached as augmentation for a regularised linear head, EfficientNet-Lite0 at
# 320 px (the others at their own size: in 5-fold cross-validation on pbc-dev only Lite0 gained
# from the larger input; see docs/ml.md). Prediction uses one view (speed);
# ``predict(..., views=[...])`` can average more (test-time augmentation).
DEFAULT = dict(
    FROZEN,
    mode="default",
    features="multistage",
    views=list(VIEWS),
    input_size={"efficientnet_lite0": 320},
    tta_views=["id"],
    head="linear",
    head_kwargs={"dropout": 0.2},
    epochs=40,
    batch_size=128,
    lr=2e-3,
    weight_decay=5e-2,
    label_smoothing=0.05,
    patience=40,
)

# Partial fine-tuning: the default features, then the last blocks of each backbone trained
# together with its head on the images (slow on a CPU; see docs/ml.md).
FINETUNE = dict(
    DEFAULT,
    mode="finetune",
    views=["id", "flip", "rot90", "flip_rot90"],  # cached prefix maps are large: four views
    input_size=None,
    finetune_epochs=10,
    finetune_lr=1e-4,
    finetune_batch_size=32,
)

RECIPES = {"frozen": FROZEN, "default": DEFAULT, "finetune": FINETUNE}

# The Lab reference of pbc-dev's training cells: the mean of each image's own L*a*b* mean and
# standard deviation (classifier.ml.colour.fit_reference) over 100 training cells per class
# (a seeded choice of the train split of docs/ml.md; never a test cell). A constant, so that a
# retraining after a lab adds cells keeps every cached feature.
PBC_LAB_REFERENCE = {"method": "reinhard", "mean": [79.5961, 10.8158, 7.3255], "std": [15.4881, 9.0237, 14.082],
                     "n_images": 900}

# Candidate changes to a recipe (config overrides), measured beside it by benchmarks/adaptation.py
# --recipe NAME; see docs/ml.md for what each measured.
VARIANTS = {
    # every image's colour standardised to pbc-dev's Lab reference (Reinhard) before featurising
    "reinhard": {"colour_standardisation": PBC_LAB_REFERENCE},
    # the default features, then each backbone's last two stages fine-tuned with its head on the
    # training cells (a lab's verified cells among them) from cached maps (classifier.ml.finetune);
    # few epochs, for a CPU
    "finetune": {"finetune_epochs": 4},
}


def recipe(mode: str, **overrides) -> dict:
    if mode not in RECIPES:
        raise ValueError(f"mode must be one of {', '.join(RECIPES)}, not {mode!r}")
    cfg = copy.deepcopy(RECIPES[mode])
    for k, v in overrides.items():
        if v is not None:
            cfg[k] = v
    return cfg


def input_size_for(config: dict, backbone: str, default: int) -> int:
    s = config.get("input_size")
    if isinstance(s, dict):
        s = s.get(backbone)
    return int(s) if s else default
