"""Local training and prediction: the same loops serve a site, a pooled baseline and DP runs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.errors import MoeHealthInputError
from shared_model.losses import moe_loss
from shared_model.moe import MoEHealth


@dataclass(frozen=True)
class TrainConfig:
    """One optimization step's settings, for a site's round and a pooled run alike (defaults from
    the paper: AdamW, lr 1e-4, batch 32, alpha 0.01). A pooled run's epoch schedule is
    simulation/centralized.py's ``CentralizedConfig``; a round's epochs come from the server."""

    task: str = "mortality"
    lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 32
    alpha: float = 0.01
    proximal_mu: float = 0.0  # FedProx (federated rounds only; 0 elsewhere)
    seed: int = 0  # data order and dropout of non-DP training (DP: the site's own secret)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1:
            raise MoeHealthInputError("lr and batch_size must be positive")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_loader(dataset: TensorDataset, batch_size: int, seed: int, shuffle: bool = True
                ) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                config: TrainConfig, device: torch.device,
                anchor: dict[str, torch.Tensor] | None = None) -> float:
    """One pass over ``loader``; returns the mean loss. ``anchor`` adds FedProx's proximal term."""
    model.train()
    core = _core(model)
    total, count = 0.0, 0
    dp = hasattr(optimizer, "noise_multiplier")  # Opacus DPOptimizer
    for *inputs, labels in loader:
        if labels.numel() == 0 and not dp:
            continue  # under DP an empty Poisson batch still takes a (noise-only) step
        inputs = [x.to(device) for x in inputs]
        labels = labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        out = model(*inputs)
        loss = moe_loss(out, labels, config.alpha, core.config.balance)
        if anchor and config.proximal_mu > 0:
            prox = sum(((p - anchor[n]) ** 2).sum() for n, p in core.named_parameters()
                       if p.requires_grad and n in anchor)
            loss = loss + 0.5 * config.proximal_mu * prox
        loss.backward()
        optimizer.step()
        if len(labels):
            total += float(loss.detach()) * len(labels)
            count += len(labels)
    return total / max(count, 1)


def _core(model: nn.Module) -> MoEHealth:
    """The MoEHealth inside an optional Opacus wrapper."""
    return getattr(model, "_module", model)


@dataclass(frozen=True)
class Predictions:
    """Per-sample outputs of one evaluation pass (kept on the site; only aggregates leave it)."""

    probs: np.ndarray
    labels: np.ndarray
    combo: np.ndarray
    weights: np.ndarray | None
    gate_probs: np.ndarray | None


def bce_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of predicted probabilities (clipped away from 0 and 1)."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


@torch.no_grad()
def predict(model: nn.Module, dataset: TensorDataset, device: torch.device,
            batch_size: int = 512) -> Predictions:
    """Run the model in eval mode over a dataset."""
    model.eval()
    probs, labels, combos, weights, gates = [], [], [], [], []
    for *inputs, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = model(*[x.to(device) for x in inputs])
        probs.append(torch.sigmoid(out.logits).cpu())
        labels.append(y)
        combos.append(out.combo.cpu())
        if out.weights is not None:
            weights.append(out.weights.cpu())
        if out.gate_probs is not None:
            gates.append(out.gate_probs.cpu())
    cat = lambda xs: torch.cat(xs).numpy() if xs else None  # noqa: E731
    return Predictions(cat(probs), cat(labels), cat(combos), cat(weights), cat(gates))
