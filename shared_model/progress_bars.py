"""Imported for its effect, first thing in each entry point (ClientApp, ServerApp): progress
bars only on a terminal, never in log files or Flower's log stream.

Sets ``TQDM_DISABLE`` when stderr is not a terminal; tqdm reads it when first imported, which is
why this must run before libraries that draw bars (transformers' "Loading weights",
flwr-datasets' partitioners) are imported.
"""

from __future__ import annotations

import os
import sys

if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_DISABLE", "1")
