"""Empirical privacy audit in one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

``m`` canary gradients (sparse random directions of norm C, the clipping norm) are each included
with probability 1/2. An included canary behaves like one more patient: at every DP-SGD step it is
Poisson-sampled at the site's rate q and added to the sum of clipped gradients *before* Opacus adds
noise. The auditor scores each canary by its inner product with the noised gradients, guesses the
top-k as included and the bottom-k as excluded, and turns the number of correct guesses into a
lower bound on epsilon (a binomial tail at p = e^eps / (1 + e^eps), Bonferroni over the k tried).
The audit run uses the site's data and the ledger's mechanism (privacy unit, sample rate, clipping,
noise, steps) on a throw-away copy of the model.

A lower bound above the ledger's epsilon means the ledger under-reports (e.g. noise silently far
smaller than claimed). A bound below it is consistent but certifies nothing.
"""

from __future__ import annotations

import client.privacy.quiet_opacus  # noqa: F401  (first: before any opacus import)

# isort: split
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

from client.data.dataset import SiteData
from client.privacy.mechanism import Mechanism
from client.privacy.settings import dp_model_config
from client.rounds.training import TrainConfig, make_optimizer, resolve_device, train_epoch
from shared_model import ModelConfig, build_model


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower_bound: float
    ledger_epsilon: float
    correct: int
    guesses: int
    canaries: int
    steps: int

    @property
    def consistent(self) -> bool:
        return self.epsilon_lower_bound <= self.ledger_epsilon


def epsilon_lower_bound(correct: int, guesses: int, beta: float) -> float:
    """Largest eps with P[Binomial(guesses, e^eps/(1+e^eps)) >= correct] <= beta (0 if none)."""
    if guesses == 0 or binom.sf(correct - 1, guesses, 0.5) > beta:
        return 0.0
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        p = 1.0 / (1.0 + math.exp(-mid))
        if binom.sf(correct - 1, guesses, p) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


class _Canaries:
    """Sparse canary directions over the optimizer's parameters, injected before the noise."""

    def __init__(self, params: list[torch.nn.Parameter], m: int, clip: float, k: int,
                 rng: np.random.Generator) -> None:
        self.params = params
        sizes = [p.numel() for p in params]
        self.offsets = np.cumsum([0, *sizes])
        d = int(self.offsets[-1])
        self.index = torch.as_tensor(rng.integers(0, d, (m, k)))
        self.value = torch.as_tensor(rng.choice([-1.0, 1.0], (m, k)) * clip / math.sqrt(k),
                                     dtype=torch.float32)
        self.included = torch.as_tensor(rng.random(m) < 0.5)
        self.scores = torch.zeros(m, dtype=torch.float64)
        self.rng = rng
        self.d = d

    def inject(self, sample_rate: float) -> None:
        sampled = self.included & torch.as_tensor(self.rng.random(len(self.included)) < sample_rate)
        flat = torch.zeros(self.d)
        flat.index_add_(0, self.index[sampled].reshape(-1), self.value[sampled].reshape(-1))
        for i, p in enumerate(self.params):
            chunk = flat[self.offsets[i]:self.offsets[i + 1]].view_as(p.summed_grad)
            p.summed_grad.add_(chunk.to(p.summed_grad))

    def score(self) -> None:
        flat = torch.cat([p.grad.detach().reshape(-1).float().cpu() for p in self.params])
        self.scores += (flat[self.index] * self.value).sum(1).double()


def run_canary_audit(data: SiteData, model_config: ModelConfig, *, mechanism: Mechanism,
                     steps: int, ledger_epsilon: float, canaries: int = 5000,
                     canary_dims: int = 64, lr: float = 1e-3, beta: float = 0.05,
                     seed: int = 0) -> AuditResult:
    """``steps`` steps of the site's DP-SGD ``mechanism`` (its unit, sample rate, clipping and
    noise) on its training split with canaries; return the empirical lower bound."""
    from client.privacy.dp_round import units_of_training_rows
    from client.privacy.dp_sgd import make_dp_training

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = resolve_device()
    model = build_model(dp_model_config(model_config)).to(device)
    optimizer = make_optimizer(model.parameters(), TrainConfig(lr=lr))
    training = make_dp_training(model, optimizer, data.subset("train"),
                                units_of_training_rows(data, mechanism.unit), mechanism,
                                key=rng.bytes(32), steps=steps)
    dp_opt = training.optimizer
    probe = _Canaries(dp_opt.params, canaries, mechanism.max_grad_norm, canary_dims, rng)
    original = dp_opt.add_noise

    def add_noise_with_canaries() -> None:
        probe.inject(mechanism.sample_rate)
        original()
        probe.score()

    dp_opt.add_noise = add_noise_with_canaries
    train_epoch(training.model, training.loader, dp_opt, TrainConfig(lr=lr, alpha=0.01), device)
    order = torch.argsort(probe.scores, descending=True)
    truth = probe.included[order].numpy()
    ks = [k for k in (10, 25, 50, 100, 200, 400, 1000, 2000) if 2 * k <= canaries]
    best = (0.0, 0, 0)
    for k in ks:
        correct = int(truth[:k].sum() + (~truth[-k:]).sum())
        bound = epsilon_lower_bound(correct, 2 * k, beta / len(ks))
        if bound >= best[0]:
            best = (bound, correct, 2 * k)
    return AuditResult(best[0], ledger_epsilon, best[1], best[2], canaries, steps)


def run_empirical_audit_cli(args) -> int:
    """``moehealth audit LEDGER --empirical --features DIR --site S``: audit that site's settings."""
    from client.errors import MoeHealthInputError
    from client.privacy.dp_round import units_of_training_rows
    from shared_model.ledger import read_ledger

    if not args.features or not args.site:
        raise MoeHealthInputError("--empirical needs --features (the site's feature cache) and --site")
    rows = [r for r in read_ledger(args.ledger) if str(r["site"]) == args.site and not r["declined"]]
    if not rows:
        raise MoeHealthInputError(f"{args.ledger}: no trained rounds of site '{args.site}'")
    last = max(rows, key=lambda r: int(r["steps_total"]))
    data = SiteData.load(args.features, args.task, args.site)
    # the ledger's own mechanism: its unit, sample rate and clipping (the expected batch is
    # set so that the site's data gives the ledger's sample rate)
    units = len(np.unique(units_of_training_rows(data, str(last.get("unit", "stay")))))
    mechanism = Mechanism(str(last.get("unit", "stay")), units,
                          expected_batch=-(-units // round(1 / float(last["sample_rate"]))),
                          local_epochs=1, max_grad_norm=float(last["max_grad_norm"]),
                          delta=float(last["delta"]),
                          noise_multiplier=float(last["noise_multiplier"]))
    if abs(mechanism.sample_rate - float(last["sample_rate"])) > 1e-9:
        raise MoeHealthInputError(f"{args.features}: this site's data cannot reproduce the ledger's "
                                  f"sample rate {last['sample_rate']} (other data?)")
    result = run_canary_audit(data, ModelConfig(), mechanism=mechanism,
                              steps=int(last["steps_total"]),
                              ledger_epsilon=float(last["epsilon"]), canaries=args.canaries)
    print(f"site {args.site}: ledger epsilon {result.ledger_epsilon:.3f}; empirical lower bound "
          f"{result.epsilon_lower_bound:.3f} ({result.correct}/{result.guesses} correct guesses, "
          f"{result.canaries} canaries, {result.steps} steps) -> "
          f"{'consistent' if result.consistent else 'LEDGER UNDER-REPORTS'}")
    return 0 if result.consistent else 1
