"""Frozen backbones (text, image) and the per-site feature cache built from them."""
