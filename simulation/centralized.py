"""Centralized training (pooled sites or one site) with early stopping: the non-federated baselines."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from client.data.dataset import SiteData
from client.errors import MoeHealthInputError
from client.rounds.evaluation import best_f1_threshold, evaluate_predictions, routing_table
from client.rounds.training import (
    TrainConfig,
    make_loader,
    make_optimizer,
    predict,
    resolve_device,
    train_epoch,
)
from shared_model import build_model
from shared_model.config import ModelConfig
from shared_model.moe import MoEHealth

log = logging.getLogger(__name__)


@dataclass
class CentralizedResult:
    model: MoEHealth
    test: dict
    val_auroc: float
    val_loss: float
    epochs: int
    seconds: float
    routing: dict
    test_probs: np.ndarray
    timings: dict[str, float]  # seconds: expert pre-training, training, validation, test


@dataclass(frozen=True)
class CentralizedConfig(TrainConfig):
    """A pooled (or single-site) run: the optimization settings plus its epoch schedule, early
    stopping on validation loss."""

    max_epochs: int = 50
    patience: int = 5
    pretrain_epochs: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.max_epochs, self.pretrain_epochs) < 0 or self.patience < 1:
            raise MoeHealthInputError("epochs must be non-negative and patience positive")


def pretrain_experts(model: MoEHealth, data: SiteData, config: CentralizedConfig,
                     device: torch.device) -> None:
    """Each expert learns only from samples whose available modalities are its combination."""
    if model.config.fusion != "moe" or config.pretrain_epochs == 0:
        return
    model.set_phase("pretrain")
    optimizer = make_optimizer(model.parameters(), config)
    loader = make_loader(data.subset("train"), config.batch_size, config.seed)
    for _ in range(config.pretrain_epochs):
        train_epoch(model, loader, optimizer, config, device)
    model.set_phase("joint")


def train_centralized(data: SiteData, model_config: ModelConfig, config: CentralizedConfig,
                      pretrain: bool = True, test_data: SiteData | None = None
                      ) -> CentralizedResult:
    """Train on the train split, stop early on validation loss (binary cross-entropy: smoother
    than a validation AUROC on few positives), report on the test split (of ``test_data`` when
    given, e.g. an independent test population)."""
    started = time.perf_counter()
    timings = dict.fromkeys(("pretrain", "train", "validation", "test"), 0.0)
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] += now - clock
        clock = now

    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model = build_model(model_config).to(device)
    if pretrain:
        pretrain_experts(model, data, config, device)
    lap("pretrain")
    optimizer = make_optimizer(model.parameters(), config)
    loader = make_loader(data.subset("train"), config.batch_size, config.seed + 1)
    val = data.subset("val")
    best, best_state, stale, epoch = np.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(1, config.max_epochs + 1):
        loss = train_epoch(model, loader, optimizer, config, device)
        lap("train")
        val_loss = evaluate_predictions(predict(model, val, device))["loss"]
        lap("validation")
        log.debug("epoch %d loss %.4f val loss %.4f", epoch, loss, val_loss)
        if val_loss < best:
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    val_pred = predict(model, val, device)
    val_metrics = evaluate_predictions(val_pred)
    threshold = best_f1_threshold(val_pred.labels, val_pred.probs)
    lap("validation")
    test_pred = predict(model, (test_data or data).subset("test"), device)
    test = evaluate_predictions(test_pred, threshold)
    test["threshold"] = threshold
    lap("test")
    return CentralizedResult(model, test, val_metrics["auroc"], val_metrics["loss"], epoch,
                             time.perf_counter() - started,
                             routing_table(test_pred), test_pred.probs, timings)
