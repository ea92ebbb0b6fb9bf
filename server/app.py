"""Flower ServerApp entry point (``server.app:app``); the federation itself lands with issue 4."""
