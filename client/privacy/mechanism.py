"""The DP-SGD mechanism a site fixes once, and the budget it spends round by round.

Every value that decides what a DP round costs in privacy is fixed at the first round the site
trains under DP (before it has spent anything it may still plan anew),
from its own configuration and the run's declared length, and recorded in its ledger: the privacy
unit and how many there are, the expected batch and with it the Poisson sample rate, the steps per
round, the clipping norm, delta and the noise multiplier. A later round whose values (sent by the
coordinator, or a changed site file) would change any of them is declined: the coordinator cannot
raise a site's sample rate, steps or epsilon by what it sends. The pre-round check accounts
exactly the (sigma, q, steps) that will run, and the history records exactly what ran.

This module is also what the simulation's ServerApp uses to refuse, before round 1, a run whose
DP sites cannot fit their budget: one plan, two callers.
"""

from __future__ import annotations

import client.privacy.quiet_opacus  # noqa: F401  (first: before any opacus import)

# isort: split
import math
from dataclasses import asdict, dataclass, fields, replace
from importlib.metadata import version
from typing import Any

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from client.privacy.settings import DPSettings

ACCOUNTANT = "prv"
RANDOMNESS = "ChaCha20 keystream (OpenSSL), fresh 256-bit key per round, held only in memory"


@dataclass(frozen=True)
class Mechanism:
    """One site's DP-SGD mechanism: what each round runs, and so what it costs."""

    unit: str  # "patient" (default) or "stay": what one sampled, clipped contribution is
    units: int  # training units the sample rate is computed from (stays at the site)
    expected_batch: int  # expected Poisson batch, in units
    local_epochs: int  # passes per round, each ceil(units / expected_batch) steps
    max_grad_norm: float
    delta: float
    noise_multiplier: float = math.nan  # nan until calibrated (see :meth:`calibrated`)
    planned_rounds: int = 0  # rounds the noise was calibrated for

    @classmethod
    def propose(cls, settings: DPSettings, *, units: int, run_batch_size: int,
                local_epochs: int) -> Mechanism:
        """The mechanism these values would give (noise not calibrated yet). ``run_batch_size``
        and ``local_epochs`` come from the coordinator and count only where the site's own
        configuration leaves them open."""
        batch = settings.batch_size or run_batch_size
        return cls(settings.unit, units, batch, local_epochs, settings.max_grad_norm,
                   settings.delta_for(units))

    def calibrated(self, settings: DPSettings, rounds: int) -> Mechanism:
        """With its noise multiplier: the site's own, or the one that makes ``rounds`` rounds
        spend exactly the target (PRV accountant); 0 for the no-noise recipe."""
        if settings.without_noise:
            sigma = 0.0
        elif settings.noise_multiplier:
            sigma = settings.noise_multiplier
        else:
            sigma = get_noise_multiplier(target_epsilon=settings.target_epsilon,
                                         target_delta=self.delta, sample_rate=self.sample_rate,
                                         steps=rounds * self.steps_per_round, accountant=ACCOUNTANT)
        return replace(self, noise_multiplier=float(sigma), planned_rounds=rounds)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.units / self.expected_batch))

    @property
    def sample_rate(self) -> float:
        """1 / steps per epoch (Opacus' convention): the expected batch is at most
        ``expected_batch``, and q tells the coordinator the number of units only to within one
        batch (README, "What leaves a DP site")."""
        return 1.0 / self.steps_per_epoch

    @property
    def steps_per_round(self) -> int:
        return self.local_epochs * self.steps_per_epoch

    def changes(self, proposed: Mechanism, settings: DPSettings) -> list[str]:
        """How ``proposed`` (this round's values) differs from this fixed mechanism: every field
        that shapes sampling or noise; the noise multiplier too where the site sets one."""
        fixed = ("unit", "units", "expected_batch", "local_epochs", "max_grad_norm", "delta")
        out = [f"{name} {getattr(self, name)} -> {getattr(proposed, name)}" for name in fixed
               if getattr(self, name) != getattr(proposed, name)]
        if settings.noise_multiplier and settings.noise_multiplier != self.noise_multiplier:
            out.append(f"noise_multiplier {self.noise_multiplier} -> {settings.noise_multiplier}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Mechanism:
        return cls(**{f.name: values[f.name] for f in fields(cls)})


def epsilon_of(history: list[list[float]], delta: float) -> float:
    """Epsilon of a history of (sigma, q, steps) segments (PRV); inf if any step had no noise."""
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    accountant = create_accountant(ACCOUNTANT)
    # Opacus' accountants keep their history as (sigma, q, steps) segments; setting it replays
    # exactly what ran (one segment per round) without calling step() once per DP-SGD step.
    # `moehealth audit --verify` re-derives the same numbers with Google's dp-accounting.
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(accountant.get_epsilon(delta))


@dataclass
class Budget:
    """A fixed mechanism, the site's target and what it has spent (the accountant's history)."""

    mechanism: Mechanism
    target_epsilon: float
    history: list[list[float]]

    @property
    def steps_total(self) -> int:
        return int(sum(h[2] for h in self.history))

    def epsilon(self, extra_rounds: int = 0) -> float:
        """Epsilon after the recorded steps and ``extra_rounds`` more rounds of the mechanism."""
        return epsilon_of(self._with_rounds(extra_rounds), self.mechanism.delta)

    def _with_rounds(self, rounds: int) -> list[list[float]]:
        history = [list(h) for h in self.history]
        if rounds:
            m = self.mechanism
            segment = [m.noise_multiplier, m.sample_rate, rounds * m.steps_per_round]
            if history and history[-1][:2] == segment[:2]:
                history[-1][2] += segment[2]  # same (sigma, q): one segment, as Opacus keeps it
            else:
                history.append(segment)
        return history

    def round_fits(self) -> tuple[bool, float]:
        """Whether one more round stays within the target, and the epsilon after it."""
        after = self.epsilon(1)
        return after <= self.target_epsilon + 1e-9, after

    def shortfall(self, rounds_left: int) -> str | None:
        """Why ``rounds_left`` more rounds cannot fit the target, or None if they fit."""
        after = self.epsilon(rounds_left)
        if after <= self.target_epsilon + 1e-9:
            return None
        return (f"privacy budget: the {rounds_left} rounds left in this run would bring epsilon "
                f"to {after:.3f} > target {self.target_epsilon} at noise multiplier "
                f"{self.mechanism.noise_multiplier:.3f}; raise the noise multiplier (or leave it "
                f"unset to calibrate), raise the target, or run fewer rounds")

    def spend_round(self) -> int:
        """Record one round of the mechanism as run; return its steps."""
        self.history = self._with_rounds(1)
        return self.mechanism.steps_per_round

    def ledger_row(self, site: str, server_round: int, steps_round: int, declined: bool,
                   reason: str = "") -> dict[str, Any]:
        """One row of the privacy ledger (README, "The ledger")."""
        m = self.mechanism
        return {"round": server_round, "site": site, "unit": m.unit, "epsilon": self.epsilon(),
                "delta": m.delta, "noise_multiplier": m.noise_multiplier,
                "sample_rate": m.sample_rate, "steps_round": steps_round,
                "steps_total": self.steps_total, "max_grad_norm": m.max_grad_norm,
                "target_epsilon": self.target_epsilon, "accountant": ACCOUNTANT,
                "accountant_version": f"opacus {version('opacus')}", "declined": declined,
                "reason": reason, "history": self.history, "mechanism": m.to_dict(),
                "randomness": RANDOMNESS,
                "guarantee": f"DP-SGD, one {m.unit} = one Poisson-sampled clipped contribution"}
