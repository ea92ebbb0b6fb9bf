"""One round of DP-SGD at a site: fixed mechanism, exact budget check, training, ledger row.

The coordinator is treated as an adversary. What it sends is used only where it cannot change what
a round costs in privacy:

- ``server-round``: the ledger's round; a round the site already answered is not answered again.
- ``num-rounds``: the rounds the noise is calibrated for at the first trained DP round (unless the site
  sets ``planned-rounds``); later values change nothing: every round is checked against the target.
- ``batch-size`` and ``local-epochs``: part of the mechanism when the site leaves them open; fixed
  at the first trained DP round, a later change is declined.
- ``phase``, ``lr``, ``alpha``, the model's dropout and the global weights: shape the update, not
  the sampling, the clipping or the noise (post-processing of the DP mechanism).
- ``seed``, ``proximal-mu``, ``aggregation-rule``: ignored (no FedProx term under DP: Opacus
  replaces the gradient by the noised sum of clipped per-sample gradients).

Noise and sampling come from a ChaCha20 key made afresh for the round (:mod:`secure_random`).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import numpy as np

from client.data.dataset import SiteData
from client.privacy.dp_sgd import make_dp_training, trained_names
from client.privacy.mechanism import Budget, Mechanism
from client.privacy.settings import DPSettings, dp_model_config
from client.privacy.site_ledger import SiteLedger
from client.rounds.federated import declared_groups, setup_round, trainable_groups
from client.rounds.training import train_epoch
from shared_model import ModelConfig
from shared_model.modalities import MODALITIES
from shared_model.moe import MoEHealth
from shared_model.params import model_to_arrays
from shared_model.protocol import Phase, RoundConfig, SiteStatus, TrainReply

log = logging.getLogger(__name__)
ALL_MODALITIES = tuple(m.value for m in MODALITIES)


@dataclass(frozen=True)
class DPRoundResult:
    """What a DP round produced: the reply (no arrays when declined) and the canonical names of
    the parameters the DP optimizer updated."""

    reply: TrainReply
    dp_parameters: frozenset[str] = frozenset()


def units_of_training_rows(data: SiteData, unit: str) -> np.ndarray:
    """The privacy unit of each training row: its patient, or the row itself (``stay``)."""
    train = data.split == "train"
    return data.subject_id[train] if unit == "patient" else np.arange(int(train.sum()))


def public_row(row: dict) -> dict:
    """The ledger row as the coordinator gets it: without the number of training units."""
    return row | {"mechanism": {k: v for k, v in row["mechanism"].items() if k != "units"}}


def _reply(site: str, row: dict, arrays: dict[str, np.ndarray] | None = None,
           weights: dict[str, int] | None = None) -> TrainReply:
    if row["declined"]:
        return TrainReply(site, {}, {}, SiteStatus.DECLINED, row["reason"],
                          epsilon=row["epsilon"], ledger_row=public_row(row))
    return TrainReply(site, arrays or {}, weights or {}, epsilon=row["epsilon"],
                      ledger_row=public_row(row))


def _decline(budget: Budget, ledger: SiteLedger, site: str, server_round: int,
             reason: str) -> DPRoundResult:
    row = budget.ledger_row(site, server_round, 0, declined=True, reason=reason)
    ledger.append(row)
    log.warning("site %s declines round %d: %s", site, server_round, reason)
    return DPRoundResult(_reply(site, row))


MISMATCH = ("the site's declared modalities do not match its data (details in the site's log); "
            "its operator must correct them")


def noise_only_groups(data: SiteData, model: MoEHealth, groups: dict[str, int], phase: Phase
                      ) -> list[str]:
    """Declared groups that no training sample would inform (they would be sent as noise alone).
    Experts of the joint phase are left out: which experts a sample reaches is the gate's choice,
    made inside the DP mechanism."""
    informed = trainable_groups(data, model, phase)
    return sorted(g for g in groups if g not in informed
                  and not (phase == Phase.JOINT and g.startswith("experts.")))


def fixed_budget(settings: DPSettings, ledger: SiteLedger, units: int, cfg: RoundConfig
                 ) -> tuple[Budget, str | None]:
    """The site's budget with its mechanism (planned anew until it has trained once), and why
    this round must be declined (the round's values would change the mechanism, it would exceed
    the target, or, at the first round, the run cannot fit), or None."""
    proposed = Mechanism.propose(settings, units=units, run_batch_size=cfg.batch_size,
                                 local_epochs=cfg.local_epochs)
    rounds_left = cfg.num_rounds - cfg.server_round + 1
    fixed = ledger.mechanism()
    if fixed is None:
        budget = Budget(proposed.calibrated(settings, settings.planned_rounds or rounds_left),
                        settings.target_epsilon, [])
        return budget, budget.shortfall(rounds_left)
    mechanism, fixed_at = fixed
    budget = Budget(mechanism, settings.target_epsilon, ledger.history())
    changed = mechanism.changes(proposed, settings)
    if changed:
        return budget, (f"this round's values would change the DP mechanism fixed at round "
                        f"{fixed_at} ({'; '.join(changed)}); the site keeps its mechanism")
    fits, after = budget.round_fits()
    return budget, None if fits else (f"privacy budget: this round would bring epsilon to "
                                      f"{after:.3f} > target {settings.target_epsilon}")


def dp_local_train(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                   cfg: RoundConfig, settings: DPSettings, ledger: SiteLedger, site: str,
                   modalities: tuple[str, ...] = ALL_MODALITIES) -> DPRoundResult:
    """Train the declared groups for one round of the site's fixed DP-SGD mechanism, or decline.

    Args:
        data: the site's samples; ``subject_id`` defines the patients (privacy unit).
        model_config, global_arrays, cfg: the run's model and the round's values (adversarial).
        settings: the site's own DP configuration.
        ledger: the site's privacy ledger (mechanism, spending, answered rounds).
        modalities: the site's declared modalities (they, not the data, pick the groups sent).

    Returns:
        The reply (arrays of the trained groups with the public weight, or declined with the
        reason) and the names of the parameters the DP optimizer updated.
    """
    previous = ledger.answered(cfg.server_round)
    if previous is not None:
        reason = (f"round {cfg.server_round} was already answered by this site (its ledger: "
                  f"{'declined' if previous['declined'] else 'trained'}); a round is answered once")
        log.warning("site %s: %s", site, reason)
        return DPRoundResult(TrainReply(site, {}, {}, SiteStatus.DECLINED, reason))
    units = units_of_training_rows(data, settings.unit)
    budget, refusal = fixed_budget(settings, ledger, len(np.unique(units)), cfg)
    if refusal:
        return _decline(budget, ledger, site, cfg.server_round, refusal)

    if settings.without_noise:
        log.warning("site %s round %d: DP-SGD WITHOUT noise (target epsilon inf): clipping and "
                    "Poisson sampling only, no privacy guarantee", site, cfg.server_round)
    setup = setup_round(
        data, dp_model_config(model_config), global_arrays, cfg,
        seed=int.from_bytes(secrets.token_bytes(8), "little"),  # dropout only: not a DP secret
        choose_groups=lambda m: declared_groups(m, modalities, cfg.phase, settings.public_weight,
                                                encoders=settings.train == "all"))
    uninformed = noise_only_groups(data, setup.model, setup.weights, cfg.phase)
    if uninformed:
        log.error("site %s: declared DP groups no training %s informs: %s; correct the site's "
                  "declared modalities", site, settings.unit, ", ".join(uninformed))
        return _decline(budget, ledger, site, cfg.server_round, MISMATCH)
    training = make_dp_training(setup.model, setup.optimizer, data.subset("train"), units,
                                budget.mechanism)
    train_epoch(training.model, training.loader, training.optimizer, setup.train_cfg,
                setup.device)  # the sampler yields exactly the mechanism's steps per round
    steps = budget.spend_round()
    if training.optimizer.noised_steps != steps:  # the history must be exactly what ran
        raise RuntimeError(f"DP round ran {training.optimizer.noised_steps} steps, the mechanism "
                           f"accounts {steps}: nothing is sent")
    row = budget.ledger_row(site, cfg.server_round, steps, declined=False)
    arrays = model_to_arrays(setup.model, groups=setup.weights)  # raw module: canonical names
    dp_names = trained_names(training)
    if not set(arrays) <= dp_names:
        raise RuntimeError(f"refusing to send parameters not trained under DP-SGD: "
                           f"{sorted(set(arrays) - dp_names)[:3]}")
    ledger.append(row)  # on disk before the update leaves the site
    return DPRoundResult(_reply(site, row, arrays, setup.weights), frozenset(dp_names))

