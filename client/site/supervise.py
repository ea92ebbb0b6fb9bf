"""``moehealth site run`` keeps the SuperNode running: a child in its own process group, restarted
with a growing pause when it exits with an error, and stopped with everything it started.

Why: a SuperNode restarted right after a crash is refused until the SuperLink marks the old
session offline (about 50 s with Flower 1.42), and a SuperNode killed on its own can leave
``flwr-clientapp`` children behind. Signals (SIGTERM, SIGINT) stop the whole group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

HEALTHY_AFTER_S = 300.0  # a SuperNode that ran this long before failing starts a fresh series


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; children it left in the group get the same signal
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM it when the supervisor dies, even by SIGKILL,
    so a SuperNode never outlives ``moehealth site run``."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_supervised(command: list[str], retries: int = 10, first_pause_s: float = 10.0,
                   max_pause_s: float = 60.0, say: Callable[[str], None] = print) -> int:
    """Run ``command`` until it exits cleanly, is stopped by a signal to us, or has failed
    ``retries`` times in a row; returns its last exit status."""
    state: dict[str, object] = {"stopping": False, "proc": None}

    def on_signal(signum: int, _frame: object) -> None:
        state["stopping"] = True
        if isinstance(state["proc"], subprocess.Popen):
            stop_group(state["proc"])

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    failures = 0
    try:
        while True:
            started = time.monotonic()
            proc = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
            state["proc"] = proc
            code = proc.wait()
            stop_group(proc)  # whatever it started and left behind
            if state["stopping"] or code == 0:
                return code
            failures = 1 if time.monotonic() - started > HEALTHY_AFTER_S else failures + 1
            if failures > retries:
                say(f"moehealth site run: the SuperNode failed {failures} times in a row "
                    f"(last exit status {code}); giving up")
                return code
            pause = min(first_pause_s * 2 ** (failures - 1), max_pause_s)
            say(f"moehealth site run: the SuperNode exited with status {code} (refused or "
                f"disconnected); starting it again in {pause:.0f} s ({failures} of {retries})")
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and not state["stopping"]:
                time.sleep(0.5)
            if state["stopping"]:
                return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
