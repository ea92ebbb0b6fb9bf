"""Personalization at a site: fine-tune the received global model on the site's own data.

Ditto-style "fine-tune the received model" (FedAvg + local fine-tuning): the site continues
training a copy of the global model on its train split and keeps the epoch whose loss on its own
validation split is lowest, the global model itself (epoch 0) included, so a site whose data does
not improve the model keeps the global one. ``parts="fusion"`` trains only what combines the
modalities (missing-modality indicators, experts, gate, head; FedPer-style local fusion) and keeps
the encoders global. Nothing here is sent: the personalized model stays at the site.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from client.data.dataset import SiteData
from client.errors import MoeHealthInputError
from client.rounds.training import (
    TrainConfig,
    bce_loss,
    make_loader,
    make_optimizer,
    predict,
    train_epoch,
)
from shared_model.moe import MoEHealth
from shared_model.params import parameter_group

PARTS = ("all", "fusion")  # what a site fine-tunes


@dataclass(frozen=True)
class FineTuneConfig:
    """Local fine-tuning settings (fixed in advance, never chosen on test)."""

    max_epochs: int = 5
    lr: float = 3e-4
    batch_size: int = 32
    parts: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.parts not in PARTS:
            raise MoeHealthInputError(f"personalization parts '{self.parts}' is not one of "
                                      f"{', '.join(PARTS)}")
        if self.max_epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise MoeHealthInputError("personalization needs max_epochs >= 0, lr > 0 and "
                                      "batch_size >= 1")


@dataclass
class FineTuneResult:
    """The personalized model and its validation loss per epoch (epoch 0: the global model)."""

    model: MoEHealth
    chosen_epoch: int
    val_losses: list[float] = field(default_factory=list)


def fine_tune(data: SiteData, global_model: MoEHealth, config: FineTuneConfig,
              device: torch.device) -> FineTuneResult:
    """A personalized copy of ``global_model``; ``global_model`` itself is left unchanged."""
    if data.size("train") == 0 or data.size("val") == 0:
        raise MoeHealthInputError(f"site {data.site}: personalization needs train and "
                                  "validation stays")
    torch.manual_seed(config.seed)
    model = copy.deepcopy(global_model).to(device)
    model.set_phase("joint")
    for name, param in model.named_parameters():
        param.requires_grad_(config.parts == "all"
                             or not parameter_group(name).startswith("encoders."))
    train_cfg = TrainConfig(task=data.task, lr=config.lr, batch_size=config.batch_size,
                            seed=config.seed)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train_cfg)
    loader = make_loader(data.subset("train"), config.batch_size, config.seed)
    val = data.subset("val")

    def val_loss() -> float:
        pred = predict(model, val, device)
        return bce_loss(pred.labels, pred.probs)

    losses = [val_loss()]
    best_state, chosen = copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, config.max_epochs + 1):
        train_epoch(model, loader, optimizer, train_cfg, device)
        losses.append(val_loss())
        if losses[-1] < min(losses[:-1]):
            best_state, chosen = copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    return FineTuneResult(model, chosen, losses)
