"""Sample-level DP-SGD at a site (Opacus), with a privacy budget that lives across rounds.

A hospital sets DP in its own configuration; the server cannot switch it off. The noise multiplier
is either given or calibrated once for the whole plan (planned rounds x local epochs x steps per
epoch) with Opacus' PRV accountant, then kept. The accountant's history is restored before and
saved after every round (``PrivacyStore``), so a restarted site continues its budget. Before a
round the site checks that the round fits the budget and otherwise declines.

Under DP the model uses DPLSTM (same parameter names as nn.LSTM) and the per-sample balance loss
(``balance="kl"``): the paper's batch load-balancing term would couple patients' gradients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from client.errors import MoeHealthInputError
from shared_model import ModelConfig

ACCOUNTANT = "prv"


@dataclass(frozen=True)
class DPSettings:
    """A site's own DP configuration (see the module docstring)."""

    enabled: bool = False
    target_epsilon: float = 8.0
    delta: float | None = None  # default min(1/n, 1e-5), n = the site's training samples
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None  # None: calibrate once for planned_rounds
    planned_rounds: int = 8

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if self.target_epsilon <= 0 or self.max_grad_norm <= 0 or self.planned_rounds < 1:
            raise MoeHealthInputError("DP: target epsilon, max grad norm and planned rounds must "
                                      "be positive")
        if self.delta is not None and not 0 < self.delta < 1:
            raise MoeHealthInputError(f"DP: delta must be in (0, 1), got {self.delta}")
        if self.noise_multiplier is not None and self.noise_multiplier <= 0:
            raise MoeHealthInputError("DP: noise multiplier must be positive")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], prefix: str = "dp.") -> DPSettings:
        """``dp.enabled``, ``dp.target-epsilon``, ``dp.delta``, ``dp.max-grad-norm``,
        ``dp.noise-multiplier``, ``dp.planned-rounds`` (0 or "" = unset)."""
        get = lambda k: values.get(prefix + k)  # noqa: E731
        num = lambda k: float(get(k)) if get(k) not in (None, "", 0, 0.0) else None  # noqa: E731
        return cls(enabled=bool(get("enabled") or False),
                   target_epsilon=num("target-epsilon") or 8.0, delta=num("delta"),
                   max_grad_norm=num("max-grad-norm") or 1.0,
                   noise_multiplier=num("noise-multiplier"),
                   planned_rounds=int(num("planned-rounds") or 8))

    def delta_for(self, n_train: int) -> float:
        return self.delta if self.delta is not None else min(1.0 / max(n_train, 1), 1e-5)


def dp_model_config(config: ModelConfig) -> ModelConfig:
    """The model a DP site trains: DPLSTM and the per-sample balance regularizer."""
    return replace(config, lstm="dp", balance="kl")


class PrivacyStore(Protocol):
    """Where a site keeps its accountant state and its append-only ledger."""

    def load(self) -> dict[str, Any]: ...
    def save(self, state: dict[str, Any]) -> None: ...
    def append_ledger(self, row: dict[str, Any]) -> None: ...


class FilePrivacyStore:
    """Deployment: ``<site dir>/privacy/{accountant.json, ledger.jsonl}``, durable across restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Any]:
        path = self.directory / "accountant.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.directory / ".accountant.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.directory / "accountant.json")

    def append_ledger(self, row: dict[str, Any]) -> None:
        with open(self.directory / "ledger.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")


@dataclass
class PrivacyPlan:
    """The fixed part of a site's DP-SGD: noise, clipping, sampling, delta and accountant state."""

    settings: DPSettings
    noise_multiplier: float
    sample_rate: float
    delta: float
    history: list[list[float]]
    steps_total: int = 0

    @classmethod
    def restore(cls, settings: DPSettings, state: dict[str, Any], n_train: int,
                steps_per_epoch: int, local_epochs: int) -> PrivacyPlan:
        """Continue the saved plan, or make one (calibrating the noise once for all rounds)."""
        if state:
            return cls(settings, state["noise_multiplier"], state["sample_rate"], state["delta"],
                       [list(h) for h in state["history"]], int(state["steps_total"]))
        q = 1.0 / steps_per_epoch  # Opacus' Poisson rate for a loader of that many batches
        delta = settings.delta_for(n_train)
        sigma = settings.noise_multiplier or get_noise_multiplier(
            target_epsilon=settings.target_epsilon, target_delta=delta, sample_rate=q,
            steps=settings.planned_rounds * local_epochs * steps_per_epoch, accountant=ACCOUNTANT)
        return cls(settings, float(sigma), q, delta, [])

    def epsilon(self, extra_steps: int = 0) -> float:
        """Epsilon after the recorded steps (+ ``extra_steps`` more at the plan's settings)."""
        acc = create_accountant(ACCOUNTANT)
        acc.history = [tuple(h) for h in self.history]
        if extra_steps:
            acc.history.append((self.noise_multiplier, self.sample_rate, extra_steps))
        return float(acc.get_epsilon(self.delta)) if acc.history else 0.0

    def fits(self, steps: int) -> tuple[bool, float]:
        """Whether ``steps`` more steps stay within the target epsilon, and the epsilon after."""
        after = self.epsilon(steps)
        return after <= self.settings.target_epsilon + 1e-9, after

    def record(self, accountant_history: list) -> int:
        """Adopt the accountant's history after a round; return the steps taken this round."""
        before = self.steps_total
        self.history = [list(h) for h in accountant_history]
        self.steps_total = int(sum(h[2] for h in self.history))
        return self.steps_total - before

    def state(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "delta": self.delta, "history": self.history, "steps_total": self.steps_total,
                "accountant": ACCOUNTANT}

    def ledger_row(self, site: str, server_round: int, steps_round: int, declined: bool,
                   reason: str = "") -> dict[str, Any]:
        """One row of the privacy ledger (see README, "Privacy ledger")."""
        return {"round": server_round, "site": site, "epsilon": self.epsilon(),
                "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "steps_round": steps_round,
                "steps_total": self.steps_total, "max_grad_norm": self.settings.max_grad_norm,
                "target_epsilon": self.settings.target_epsilon, "accountant": ACCOUNTANT,
                "accountant_version": f"opacus {version('opacus')}", "declined": declined,
                "reason": reason, "history": self.history,
                "guarantee": "sample-level DP-SGD (one sample = one ICU stay)"}

