"""One round of DP-SGD local training at a site: plan, budget check, Opacus, ledger row."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from opacus import PrivacyEngine

from client.data.dataset import SiteData
from client.privacy.budget import ACCOUNTANT, PrivacyPlan
from client.privacy.settings import DPSettings, PrivacyStore, dp_model_config
from client.rounds.federated import setup_round
from client.rounds.training import train_epoch
from shared_model import ModelConfig
from shared_model.params import canonical_name, model_to_arrays
from shared_model.protocol import RoundConfig, SiteStatus, TrainReply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPRoundResult:
    """What a DP round produced: the reply (no arrays when declined, always the ledger row) and
    the canonical names of the parameters the DP optimizer updated."""

    reply: TrainReply
    dp_parameters: frozenset[str] = frozenset()


def dp_local_train(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                   cfg: RoundConfig, settings: DPSettings, store: PrivacyStore, site: str
                   ) -> DPRoundResult:
    """Train the site's groups under DP-SGD with Poisson sampling, or decline over budget."""

    setup = setup_round(data, dp_model_config(model_config), global_arrays, cfg)
    model, weights, train_cfg, device = setup.model, setup.weights, setup.train_cfg, setup.device
    optimizer, loader = setup.optimizer, setup.loader
    plan = PrivacyPlan.restore(settings, store.load(), data.size("train"), len(loader),
                               cfg.local_epochs)
    fits, eps_after = plan.fits(cfg.local_epochs * len(loader))
    if not fits:
        reason = (f"privacy budget: this round would bring epsilon to {eps_after:.3f} > "
                  f"target {settings.target_epsilon}")
        row = plan.ledger_row(site, cfg.server_round, 0, declined=True, reason=reason)
        store.save(plan.state())
        store.append_ledger(row)
        log.warning("site %s declines round %d: %s", site, cfg.server_round, reason)
        return DPRoundResult(TrainReply(site, {}, {}, SiteStatus.DECLINED, reason,
                                        epsilon=row["epsilon"], ledger_row=row))

    engine = PrivacyEngine(accountant=ACCOUNTANT)
    engine.accountant.load_state_dict({"history": [tuple(h) for h in plan.history],
                                       "mechanism": ACCOUNTANT})
    dp_model, dp_optimizer, dp_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=plan.noise_multiplier, max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True)
    losses = [train_epoch(dp_model, dp_loader, dp_optimizer, train_cfg, device)
              for _ in range(cfg.local_epochs)]
    steps = plan.record(engine.accountant.history)
    row = plan.ledger_row(site, cfg.server_round, steps, declined=False)
    store.save(plan.state())
    store.append_ledger(row)
    arrays = model_to_arrays(model, groups=weights)  # raw module: canonical names
    dp_names = _dp_trained_names(dp_model, dp_optimizer, dp_loader)
    if not set(arrays) <= dp_names:
        raise RuntimeError(f"refusing to send parameters not trained under DP-SGD: "
                           f"{sorted(set(arrays) - dp_names)[:3]}")
    reply = TrainReply(site, arrays, weights, train_loss=losses[-1],
                       train_examples=data.size("train"), epsilon=row["epsilon"], ledger_row=row)
    return DPRoundResult(reply, frozenset(dp_names))


def _dp_trained_names(dp_model, dp_optimizer, dp_loader) -> set[str]:
    """Names of the parameters the DP optimizer updates, if the loader samples Poisson batches."""
    from opacus.data_loader import DPDataLoader

    if not isinstance(dp_loader, DPDataLoader):
        return set()
    in_optimizer = {id(p) for group in dp_optimizer.param_groups for p in group["params"]}
    return {canonical_name(n) for n, p in dp_model.named_parameters() if id(p) in in_optimizer}
