"""Where a hospital message's time goes, appended to a site-local file (never sent).

Flower 1.42 starts a fresh ClientApp process for every message, so each message pays the process
start and the imports before the handler runs. Each handler appends one JSON line to
``<state-dir>/message-timing.jsonl``: seconds from process start to the app module loaded and to
the handler entered, then the handler's steps. ``bench/message_path.py`` reads these lines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

__all__ = ["TIMING_FILE", "MessageTimer", "process_age_s"]

TIMING_FILE = "message-timing.jsonl"
log = logging.getLogger(__name__)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc, ~10 ms resolution; None elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


class MessageTimer:
    """Seconds per step of one message handler, written as one line of the site's timing file."""

    def __init__(self, kind: str, app_loaded_s: float | None) -> None:
        self.record: dict[str, object] = {"kind": kind, "start_to_app_loaded_s": _rounded(app_loaded_s),
                                          "start_to_handler_s": _rounded(process_age_s())}
        self._last = time.perf_counter()

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.record[f"{step}_s"] = round(now - self._last, 4)
        self._last = now

    def append_to(self, state_dir: Path) -> None:
        """Append the line; where the folder is not writable, log a warning and train on."""
        try:
            with open(state_dir / TIMING_FILE, "a") as out:
                out.write(json.dumps({**self.record, "time": time.time()}) + "\n")
        except OSError as err:
            log.warning("message timing not written to %s: %s", state_dir / TIMING_FILE, err)
