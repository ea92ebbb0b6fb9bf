"""The one exception family for input a user can fix; the CLI and both apps show it as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest_key_hint(key: str, valid: Iterable[str], prefix: str = "") -> str:
    """``; did you mean 'x'?`` for a mistyped key, else the list of valid keys."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid: {', '.join(valid)}"


class MoeHealthInputError(Exception):
    """Bad input data or configuration; the message names the file, key, site or round at fault."""


class ProtocolError(MoeHealthInputError):
    """A message between server and site does not follow the declared protocol."""
