"""Where moehealth keeps caches and runs on a machine, coordinator or hospital alike."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$MOEHEALTH_CACHE`` or ``~/.cache/moehealth``."""
    return Path(os.environ.get("MOEHEALTH_CACHE", Path.home() / ".cache" / "moehealth"))
