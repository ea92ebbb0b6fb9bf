"""One line per step of a long experiment (a training, a federation), with time left."""

from __future__ import annotations

import sys
import time


class StepLog:
    """One line per step of a long experiment, on stderr: ``[3/12] name: done in 41 s (elapsed
    2m 03s, about 6m 09s left)``."""

    def __init__(self, total: int, experiment: str) -> None:
        self.total, self.experiment, self.done = max(total, 1), experiment, 0
        self.started = time.perf_counter()

    def start(self, name: str) -> None:
        print(f"[{self.done + 1}/{self.total}] {self.experiment}: {name} ...", file=sys.stderr,
              flush=True)

    def finish(self, name: str, seconds: float) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        print(f"[{self.done}/{self.total}] {self.experiment}: {name} done in {seconds:.0f} s "
              f"(elapsed {_minutes(elapsed)}, about {_minutes(left)} left)", file=sys.stderr,
              flush=True)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
