"""The run directory: per-round metrics, contributions, bytes, checkpoints; resumable.

Layout::

    RUN_DIR/config.json             run-config of the run
    RUN_DIR/rounds.jsonl            one line per round: phase, aggregated metrics, contributors
                                    per group, rejected/declined sites, bytes received per site,
                                    seconds per phase (sites' replies, aggregation)
    RUN_DIR/site_metrics.jsonl      one line per round and site: train and evaluation metrics
    RUN_DIR/checkpoints/round-NNN.safetensors   global model (+ server optimizer state)
    RUN_DIR/checkpoints/latest.json             last complete checkpoint (round, file, state)
    RUN_DIR/cross_site.md           final table: global model on each site's test split
    RUN_DIR/data_summary.json       simulation: samples, positives, modality mix per site/split
    RUN_DIR/tensorboard/            tracking = "tensorboard": round metrics as event files
    RUN_DIR/running.json            while a ServerApp runs the run: its host and process id

Files are appended line by line or replaced atomically, so a crash never corrupts what was
written before it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from server.tracking import Tracker
from shared_model.checkpoint import (
    OPT_PREFIX,
    check_fits,
    read_model_file,
    split_checkpoint,
    write_model_file,
)
from shared_model.paths import default_cache_dir

log = logging.getLogger(__name__)
DATA_SUMMARY = "data_summary.json"
RUNNING = "running.json"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


PRIVACY_LEDGER = "privacy_ledger.jsonl"


def _round_of(line: str) -> int | None:
    try:
        return int(json.loads(line).get("round", 0))
    except (ValueError, AttributeError):
        return None  # a line cut short by a crash


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDirectory:
    """Writer (and reader, for resume) of one federated run's outputs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.tracker: Tracker | None = None  # also streams every appended line (tracking key)

    @classmethod
    def create(cls, requested: str, run_config: dict[str, Any]) -> RunDirectory:
        """A new run directory (``requested`` or a timestamped one under the cache root)."""
        path = Path(requested) if requested else (
            default_cache_dir() / "runs" / time.strftime("run-%Y%m%d-%H%M%S"))
        if (path / "checkpoints" / "latest.json").exists():
            raise ValueError(f"{path} already holds a run; use resume-from to continue it")
        run = cls(path)
        _atomic_write(run.path / "config.json", json.dumps(_clean(dict(run_config)), indent=2))
        return run

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line (with the wall-clock ``time`` it was written) and fsync it."""
        with open(self.path / name, "a") as fh:
            fh.write(json.dumps(_clean({**record, "time": round(time.time(), 3)})) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tracker is not None:
            self.tracker.record(name, record)

    def save_checkpoint(self, server_round: int, arrays: dict[str, np.ndarray],
                        optimizer_state: dict[str, np.ndarray], state: dict[str, Any]) -> Path:
        """Write round N's global model, then point latest.json at it (atomic)."""
        file = self.path / "checkpoints" / f"round-{server_round:03d}.safetensors"
        write_model_file(file, {**arrays, **{OPT_PREFIX + k: v for k, v in optimizer_state.items()}},
                         metadata={"round": str(server_round)})
        _atomic_write(self.path / "checkpoints" / "latest.json",
                      json.dumps(_clean({"round": server_round, "file": file.name, **state})))
        return file

    def load_latest(self) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray], dict]:
        """(round, model arrays, optimizer state, strategy state) of the last intact checkpoint.

        A truncated or corrupt checkpoint (or ``latest.json``) is named in a warning and the one
        before it is used; with none intact, one clear error naming the folder."""
        state = self._latest_state()
        candidates = sorted(self.path.glob("checkpoints/round-*.safetensors"), reverse=True)
        if state is not None:
            pointed = self.path / "checkpoints" / str(state.get("file", ""))
            candidates = [pointed] + [c for c in candidates if c != pointed]
        for file in candidates:
            try:
                tensors = load_file(str(file))
                rnd = int(file.stem.removeprefix("round-"))
            except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
                log.warning("checkpoint %s is unreadable (%s); trying the one before it", file,
                            str(err).splitlines()[0] if str(err) else type(err).__name__)
                continue
            model, opt = split_checkpoint(tensors)
            if state is None or state.get("file") != file.name:
                state = {"round": rnd, "file": file.name}
            return rnd, model, opt, state
        raise ValueError(f"{self.path}: no intact checkpoint to resume from "
                         f"({len(candidates)} unreadable)" if candidates
                         else f"{self.path}: no checkpoint to resume from")

    @staticmethod
    def load_model(source: str | Path, expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model arrays of a checkpoint file or of a run directory's last intact checkpoint,
        checked name by name and shape by shape against ``expected`` (the model of this run)."""
        path = Path(source)
        arrays = (RunDirectory(path).load_latest()[1] if path.is_dir()
                  else read_model_file(path, "init-from"))
        check_fits(arrays, expected, path, "init-from")
        return arrays

    def _latest_state(self) -> dict[str, Any] | None:
        latest = self.path / "checkpoints" / "latest.json"
        if not latest.is_file():
            return None
        try:
            return dict(json.loads(latest.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError):
            log.warning("%s is corrupt; resuming from the newest intact checkpoint", latest)
            return None

    def mark_running(self) -> None:
        """Say that a ServerApp is running this run (reports then say RUNNING, not stopped)."""
        (self.path / RUNNING).write_text(json.dumps({"host": socket.gethostname(),
                                                     "pid": os.getpid(), "since": time.time()}))

    def mark_stopped(self) -> None:
        (self.path / RUNNING).unlink(missing_ok=True)

    @staticmethod
    def is_running(path: Path) -> bool:
        """A ServerApp runs this run now: its marker exists and, on this host, its process
        lives (a marker left by a killed process does not count)."""
        try:
            marker = json.loads((Path(path) / RUNNING).read_text())
        except (OSError, ValueError):
            return False
        if marker.get("host") != socket.gethostname():
            return True
        try:
            os.kill(int(marker["pid"]), 0)
        except (ProcessLookupError, KeyError, ValueError, TypeError):
            return False
        except PermissionError:
            return True
        return True

    def discard_if_unstarted(self) -> None:
        """Remove the folder of a run that failed before its first round (nothing of value in
        it); a run with a checkpoint or a round log is never touched."""
        logs = [self.path / n for n in ("rounds.jsonl", "site_metrics.jsonl")]
        if any(self.path.glob("checkpoints/*.safetensors")) or any(p.exists() for p in logs):
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def truncate_after(self, server_round: int) -> None:
        """Drop log lines of rounds after ``server_round`` (written before a crash), except the
        privacy ledger's: a released update's budget stays spent, so its row stays, marked
        ``after_checkpoint`` (the round is trained again under the resumed run's model)."""
        for name in ("rounds.jsonl", "site_metrics.jsonl"):
            path = self.path / name
            if path.is_file():
                keep = [line for line in path.read_text().splitlines()
                        if _round_of(line) is not None and _round_of(line) <= server_round]
                _atomic_write(path, "".join(line + "\n" for line in keep))
        ledger = self.path / PRIVACY_LEDGER
        if ledger.is_file():
            rows = [json.loads(line) for line in ledger.read_text().splitlines()
                    if _round_of(line) is not None]
            marked = [r | {"after_checkpoint": True} if int(r["round"]) > server_round else r
                      for r in rows]
            _atomic_write(ledger, "".join(json.dumps(r) + "\n" for r in marked))
