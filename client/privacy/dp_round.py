"""One round of DP-SGD local training at a site: plan, budget check, Opacus, ledger row.

Everything random in a DP round comes from the site's private randomness, never from the server:
the Gaussian noise, the Poisson sampling of each step and dropout are seeded afresh each round
from the operating system's entropy pool (``os.urandom``), which no message, configuration or
checkpoint determines. (Opacus' ``secure_mode`` would draw from torchcsprng, which has no build for
this torch; see README, "What leaves a DP site", for what this does and does not protect against.)
What the site trains and the weights it sends come from its declared configuration, not its data.
"""

from __future__ import annotations

import client.privacy.quiet_opacus  # noqa: F401  (first: before any opacus import)

# isort: split
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine

from client.data.dataset import SiteData
from client.privacy.budget import ACCOUNTANT, PrivacyPlan
from client.privacy.settings import DPSettings, PrivacyStore, dp_model_config
from client.rounds.federated import declared_groups, setup_round
from client.rounds.training import train_epoch
from shared_model import ModelConfig
from shared_model.modalities import MODALITIES
from shared_model.params import canonical_name, model_to_arrays
from shared_model.protocol import RoundConfig, SiteStatus, TrainReply

log = logging.getLogger(__name__)
ALL_MODALITIES = tuple(m.value for m in MODALITIES)


def private_seed() -> int:
    """63 bits from the OS entropy pool: known to this process only, different every call."""
    return int.from_bytes(os.urandom(8), "little") >> 1


@dataclass(frozen=True)
class DPRoundResult:
    """What a DP round produced: the reply (no arrays when declined, always the ledger row) and
    the canonical names of the parameters the DP optimizer updated."""

    reply: TrainReply
    dp_parameters: frozenset[str] = frozenset()


def _declined(plan: PrivacyPlan, store: PrivacyStore, site: str, cfg: RoundConfig,
              reason: str) -> DPRoundResult:
    row = plan.ledger_row(site, cfg.server_round, 0, declined=True, reason=reason)
    store.save(plan.state())
    store.append_ledger(row)
    log.warning("site %s declines round %d: %s", site, cfg.server_round, reason)
    return DPRoundResult(TrainReply(site, {}, {}, SiteStatus.DECLINED, reason,
                                    epsilon=row["epsilon"], ledger_row=row))


def dp_local_train(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                   cfg: RoundConfig, settings: DPSettings, store: PrivacyStore, site: str,
                   modalities: tuple[str, ...] = ALL_MODALITIES) -> DPRoundResult:
    """Train the declared groups under DP-SGD with Poisson sampling, or decline over budget."""
    setup = setup_round(
        data, dp_model_config(model_config), global_arrays, cfg, seed=private_seed(),
        batch_size=settings.batch_size or None,
        choose_groups=lambda m: declared_groups(m, modalities, cfg.phase, settings.public_weight,
                                                encoders=settings.train == "all"))
    model, weights, device = setup.model, setup.weights, setup.device
    rounds_left = cfg.num_rounds - cfg.server_round + 1
    plan = PrivacyPlan.restore(settings, store.load(), data.size("train"), len(setup.loader),
                               cfg.local_epochs, rounds_left)
    shortfall = None if plan.history else plan.run_shortfall(rounds_left, cfg.local_epochs)
    fits, eps_after = plan.fits(cfg.local_epochs * len(setup.loader))
    if shortfall or not fits:
        return _declined(plan, store, site, cfg, shortfall or (
            f"privacy budget: this round would bring epsilon to {eps_after:.3f} > target "
            f"{settings.target_epsilon}"))

    if settings.without_noise:
        log.warning("site %s round %d: DP-SGD WITHOUT noise (target epsilon inf): clipping and "
                    "Poisson sampling only, no privacy guarantee", site, cfg.server_round)
    engine = PrivacyEngine(accountant=ACCOUNTANT)
    engine.accountant.load_state_dict({"history": [tuple(h) for h in plan.history],
                                       "mechanism": ACCOUNTANT})
    # setup.loader's generator is seeded with the private seed: Opacus' Poisson sampler uses it
    dp_model, dp_optimizer, dp_loader = engine.make_private(
        module=model, optimizer=setup.optimizer, data_loader=setup.loader,
        noise_multiplier=plan.noise_multiplier, max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True,
        noise_generator=torch.Generator(device=device).manual_seed(private_seed()))
    for _ in range(cfg.local_epochs):
        train_epoch(dp_model, dp_loader, dp_optimizer, setup.train_cfg, device)
    steps = plan.record(engine.accountant.history)
    row = plan.ledger_row(site, cfg.server_round, steps, declined=False)
    store.save(plan.state())
    store.append_ledger(row)
    arrays = model_to_arrays(model, groups=weights)  # raw module: canonical names
    dp_names = _dp_trained_names(dp_model, dp_optimizer, dp_loader)
    if not set(arrays) <= dp_names:
        raise RuntimeError(f"refusing to send parameters not trained under DP-SGD: "
                           f"{sorted(set(arrays) - dp_names)[:3]}")
    reply = TrainReply(site, arrays, weights, epsilon=row["epsilon"], ledger_row=row)
    return DPRoundResult(reply, frozenset(dp_names))


def _dp_trained_names(dp_model, dp_optimizer, dp_loader) -> set[str]:
    """Names of the parameters the DP optimizer updates, if the loader samples Poisson batches."""
    from opacus.data_loader import DPDataLoader

    if not isinstance(dp_loader, DPDataLoader):
        return set()
    in_optimizer = {id(p) for group in dp_optimizer.param_groups for p in group["params"]}
    return {canonical_name(n) for n, p in dp_model.named_parameters() if id(p) in in_optimizer}
