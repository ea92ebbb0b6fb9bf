"""Flower ClientApp entry point (``client.app:app``); the federation itself lands with issue 4."""
