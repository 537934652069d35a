"""LeukoPortal's machine-learning library: pure PyTorch, never imports Django.

Entry points live in :mod:`classifier.ml.api` (``train``, ``load_ensemble``); the backbone table
in :mod:`classifier.ml.registry`. Importing this package loads nothing heavy.
"""
