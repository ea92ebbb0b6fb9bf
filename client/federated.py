"""What a site does in one federated round, without any Flower types (the ClientApp wraps it).

A site trains only the parameter groups its data can inform and reports, per group, how many
of its training samples drove it: encoders of the modalities it has, indicator embeddings of the
modalities some of its samples lack, experts of the modality combinations it has, the gate (joint
phase) or the fusion head. Everything else is frozen and not sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from client.dataset import SiteData
from client.evaluation import best_f1_threshold, evaluate_predictions, routing_table
from client.training import (
    TrainConfig,
    make_loader,
    make_optimizer,
    predict,
    resolve_device,
    train_epoch,
)
from shared_model import ModelConfig, build_model
from shared_model.moe import MoEHealth
from shared_model.params import group_names, load_arrays, model_to_arrays, parameter_group


@dataclass(frozen=True)
class RoundConfig:
    """Per-round values the server sends in the message's ConfigRecord."""

    round: int
    phase: str = "joint"
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    alpha: float = 0.01
    proximal_mu: float = 0.0
    seed: int = 0
    aggregation_rule: str = "modality-aware"  # or "fedavg-all": send everything, weight by n

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RoundConfig:
        return cls(round=int(record["round"]), phase=str(record.get("phase", "joint")),
                   local_epochs=int(record.get("local-epochs", 1)), lr=float(record.get("lr", 1e-3)),
                   batch_size=int(record.get("batch-size", 32)),
                   alpha=float(record.get("alpha", 0.01)),
                   proximal_mu=float(record.get("proximal-mu", 0.0)),
                   seed=int(record.get("seed", 0)),
                   aggregation_rule=str(record.get("aggregation-rule", "modality-aware")))

    def train_config(self, task: str) -> TrainConfig:
        return TrainConfig(task=task, lr=self.lr, batch_size=self.batch_size, alpha=self.alpha,
                           proximal_mu=self.proximal_mu, seed=self.seed + self.round)


def trainable_groups(data: SiteData, model: MoEHealth, phase: str,
                     rule: str = "modality-aware") -> dict[str, int]:
    """Groups this site can train in ``phase``, with the number of training samples behind each.

    ``rule="fedavg-all"`` is the plain-FedAvg baseline: every group, weighted by the site's size.
    """
    idx = np.flatnonzero(data.split == "train")
    if rule == "fedavg-all":
        return dict.fromkeys(group_names(model), len(idx))
    available = data.inputs["available"][idx].numpy() > 0.5
    combos = data.combination_counts("train")
    counts: dict[str, int] = {}
    for group in group_names(model):
        kind, _, name = group.partition(".")
        if kind == "encoders":
            counts[group] = int(available[:, ["ehr", "notes", "cxr"].index(name)].sum())
        elif kind == "missing":
            counts[group] = int((~available[:, ["ehr", "notes", "cxr"].index(name)]).sum())
        elif kind == "experts":
            counts[group] = combos.get(name, 0)
        elif kind == "gate":
            counts[group] = len(idx) if phase == "joint" else 0
        else:  # head
            counts[group] = len(idx)
    return {g: n for g, n in counts.items() if n > 0}


def prepare_model(model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                  device: torch.device) -> MoEHealth:
    model = build_model(model_config)
    load_arrays(model, global_arrays)
    return model.to(device)


@dataclass
class RoundSetup:
    """A site's model for one round: global weights loaded, only its trainable groups unfrozen."""

    model: MoEHealth
    weights: dict[str, int]
    train_cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    device: torch.device


def setup_round(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                cfg: RoundConfig) -> RoundSetup:
    """Shared by non-DP and DP local training."""
    device = resolve_device()
    torch.manual_seed(cfg.seed + cfg.round)
    model = prepare_model(model_config, global_arrays, device)
    model.set_phase("pretrain" if cfg.phase == "pretrain" else "joint")
    weights = trainable_groups(data, model, cfg.phase, cfg.aggregation_rule)
    for name, param in model.named_parameters():
        param.requires_grad_(parameter_group(name) in weights)
    train_cfg = cfg.train_config(data.task)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train_cfg)
    loader = make_loader(data.subset("train"), cfg.batch_size, train_cfg.seed)
    return RoundSetup(model, weights, train_cfg, optimizer, loader, device)


def local_train(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                cfg: RoundConfig) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, float]]:
    """Train the site's groups for ``cfg.local_epochs``; return (updated arrays, weights, metrics)."""
    setup = setup_round(data, model_config, global_arrays, cfg)
    model, weights, train_cfg, device = setup.model, setup.weights, setup.train_cfg, setup.device
    optimizer, loader = setup.optimizer, setup.loader
    anchor = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
              if cfg.proximal_mu > 0 else None)
    losses = [train_epoch(model, loader, optimizer, train_cfg, device, anchor)
              for _ in range(cfg.local_epochs)]
    arrays = model_to_arrays(model, groups=weights)
    return arrays, weights, {"train-loss": losses[-1], "train-examples": data.size("train")}


def local_evaluate(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray]
                   ) -> dict[str, float]:
    """Metrics of the global model on this site's validation and test splits (aggregates only)."""
    device = resolve_device()
    model = prepare_model(model_config, global_arrays, device)
    out: dict[str, float] = {"num-examples": data.size("test")}
    threshold = 0.5
    for split in ("val", "test"):
        if data.size(split) == 0:
            continue
        pred = predict(model, data.subset(split), device)
        if split == "val":  # F1 threshold chosen on validation, applied to test
            threshold = best_f1_threshold(pred.labels, pred.probs)
        result = evaluate_predictions(pred, threshold)
        for key in ("auroc", "auprc", "f1", "loss"):
            out[f"{split}.{key}"] = result[key]
        if split == "test":
            out["test.threshold"] = threshold
            for combo, res in result["by_combination"].items():
                out[f"test.{combo}.auroc"] = res["auroc"]
                out[f"test.{combo}.n"] = res["n"]
            for combo, experts in routing_table(pred).items():  # mean weights: aggregates only
                out.update({f"route.{combo}.{e}": w for e, w in experts.items()})
    return out
