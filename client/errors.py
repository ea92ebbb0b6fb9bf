"""Errors a site operator can act on: each names the file, column or site at fault."""

import difflib
from collections.abc import Iterable

from shared_model.errors import MoeHealthInputError

__all__ = ["MimicFileError", "MoeHealthInputError", "SiteDataError", "closest_key_hint"]


def closest_key_hint(key: str, valid: Iterable[str], prefix: str = "") -> str:
    """``; did you mean 'x'?`` for a mistyped key, else the list of valid keys."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid: {', '.join(valid)}"


class MimicFileError(MoeHealthInputError):
    """A MIMIC table is missing, truncated, empty or lacks a required column."""


class SiteDataError(MoeHealthInputError):
    """A site has no usable samples or an inconsistent feature cache."""
