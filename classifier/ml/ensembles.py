"""The named ensembles (which backbones vote together). No torch here, so that the web side (the
training form, the progress bar, the training service) can read the names cheaply; the backbones
themselves are in :mod:`classifier.ml.registry`."""

ENSEMBLES: dict[str, list[str]] = {
    "paper": ["resnet50", "inception_v3", "vgg16", "vgg19", "xception"],
    "offline": ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
}
