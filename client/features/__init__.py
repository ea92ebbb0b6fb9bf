"""Frozen backbones (text, image) and the per-site feature cache built from them."""

FEATURES_FILE = "features.npz"  # in each site's feature cache folder (written by cache.py)
