"""Optional streaming of round metrics to an experiment tracker (run-config ``tracking``).

``tensorboard``: event files in ``RUN_DIR/tensorboard`` (offline; view with
``tensorboard --logdir RUN_DIR/tensorboard``). Every line the run directory records becomes
scalars: ``train/loss``, ``evaluate/test.auroc``, ``pooled/auroc``, ``site-0/evaluate/test.auroc``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from shared_model.protocol import POOLED_PREFIX


class Tracking(StrEnum):
    NONE = "none"
    TENSORBOARD = "tensorboard"


class Tracker(Protocol):
    def record(self, log_name: str, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(log_name: str, record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of one run-directory line, named for a tracker."""
    kind = str(record.get("kind", ""))
    if log_name == "site_metrics.jsonl":
        prefix = f"{record.get('site')}/{kind}/"
    elif kind == "centralized-eval":
        prefix = "pooled/"
    else:
        prefix = f"{kind}/"
    out = {}
    for key, value in record.items():
        if key in ("round", "time") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            name = key.removeprefix(POOLED_PREFIX) if prefix == "pooled/" else key
            out[prefix + ("loss" if name == "train_loss" else name)] = float(value)
    return out


class TensorBoardTracker:
    """Round metrics as TensorBoard scalars (step = the run's absolute round)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # only when tracking is on

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def record(self, log_name: str, record: dict[str, Any]) -> None:
        step = int(record.get("round", 0))
        for name, value in scalars(log_name, record).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_tracker(tracking: Tracking, run_dir: Path) -> Tracker | None:
    if tracking is Tracking.TENSORBOARD:
        return TensorBoardTracker(run_dir / "tensorboard")
    return None
