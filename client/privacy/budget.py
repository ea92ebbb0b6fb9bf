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

import client.privacy.quiet_opacus  # noqa: F401  (first: before any opacus import)

# isort: split
import math
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from client.privacy.settings import DPSettings

ACCOUNTANT = "prv"


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
                steps_per_epoch: int, local_epochs: int, rounds_left: int) -> PrivacyPlan:
        """Continue the saved plan, or make one: the noise is calibrated once so that the planned
        rounds (``planned_rounds``, or the ``rounds_left`` in the run) spend the whole budget."""
        if state:
            return cls(settings, state["noise_multiplier"], state["sample_rate"], state["delta"],
                       [list(h) for h in state["history"]], int(state["steps_total"]))
        q = 1.0 / steps_per_epoch  # Opacus' Poisson rate for a loader of that many batches
        delta = settings.delta_for(n_train)
        rounds = settings.planned_rounds or rounds_left
        sigma = 0.0 if settings.without_noise else settings.noise_multiplier or get_noise_multiplier(
            target_epsilon=settings.target_epsilon, target_delta=delta, sample_rate=q,
            steps=rounds * local_epochs * steps_per_epoch, accountant=ACCOUNTANT)
        return cls(settings, float(sigma), q, delta, [])

    def run_shortfall(self, rounds_left: int, local_epochs: int) -> str | None:
        """Why the rest of the run cannot fit the budget at this plan's noise, or None if it fits
        (a site checks this before its first round; a simulation before round 1)."""
        steps = rounds_left * local_epochs * round(1 / self.sample_rate)
        fits, after = self.fits(steps)
        if fits:
            return None
        return (f"privacy budget: the {rounds_left} rounds left in this run would bring epsilon "
                f"to {after:.3f} > target {self.settings.target_epsilon} at noise multiplier "
                f"{self.noise_multiplier:.3f}; raise the noise multiplier (or leave it unset to "
                f"calibrate), raise the target, or run fewer rounds")

    def epsilon(self, extra_steps: int = 0) -> float:
        """Epsilon after the recorded steps (+ ``extra_steps`` more at the plan's settings)."""
        acc = create_accountant(ACCOUNTANT)
        acc.history = [tuple(h) for h in self.history]
        if extra_steps:
            acc.history.append((self.noise_multiplier, self.sample_rate, extra_steps))
        if any(sigma == 0 for sigma, _, _ in acc.history):
            return math.inf  # steps without noise: no guarantee
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

