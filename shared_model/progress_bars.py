"""Imported for its effect, first thing in each entry point (ClientApp, ServerApp): progress
bars only on a terminal, never in log files or Flower's log stream.

Sets ``TQDM_DISABLE`` when stderr is not a terminal; tqdm reads it when first imported, which is
why this must run before libraries that draw bars (transformers' "Loading weights",
flwr-datasets' partitioners) are imported.
"""

from __future__ import annotations

import logging
import os
import sys

if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_DISABLE", "1")


class Progress:
    """Counts and time left for a step that runs over ~10 s: a tqdm bar on a terminal, otherwise
    a log line every ``every_s`` seconds (``desc: 512/1,623 notes (32%), 41 s, about 87 s left``)."""

    def __init__(self, total: int, desc: str, unit: str, log: logging.Logger,
                 every_s: float = 10.0) -> None:
        import time

        from tqdm import tqdm

        self.total, self.desc, self.unit, self.log, self.every_s = total, desc, unit, log, every_s
        self.done, self._clock = 0, time.perf_counter
        self.started = self.last = self._clock()
        self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", leave=False) \
            if sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE") else None

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = self._clock()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            elapsed = now - self.started
            left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            self.log.info("%s: %d/%d %s (%d%%), %.0f s, about %.0f s left", self.desc, self.done,
                          self.total, self.unit, 100 * self.done // max(self.total, 1), elapsed,
                          left)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
