"""What a site does in one federated round, without any Flower types (the ClientApp wraps it).

A site trains only the parameter groups its data can inform and reports, per group, how many
of its training samples drove it: encoders of the modalities it has, indicator embeddings of the
modalities some of its samples lack, experts of the modality combinations it has, the gate (joint
phase) or the fusion head. Everything else is frozen and not sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from client.data.dataset import SiteData
from client.rounds.disclosure import (
    cell_metrics_releasable,
    cell_sizes,
    cells_with,
    classes_large_enough,
    released_cells,
    released_mask,
    released_predictions,
)
from client.rounds.training import (
    TrainConfig,
    make_loader,
    make_optimizer,
    predict,
    resolve_device,
    train_epoch,
)
from shared_model import ModelConfig, build_model
from shared_model.modalities import Modality
from shared_model.moe import MoEHealth
from shared_model.params import group_names, load_arrays, model_to_arrays, parameter_group
from shared_model.protocol import (
    MIN_CELL_SIZE,
    SPLIT_METRICS,
    SPLITS,
    AggregationRule,
    EvaluateReply,
    Phase,
    RoundConfig,
    SiteStatus,
    TrainReply,
)


def train_config(cfg: RoundConfig, task: str) -> TrainConfig:
    """Local optimization settings of a round (the randomness is :func:`setup_round`'s: the
    server's seed + round for non-DP sites, private randomness for DP sites)."""
    return TrainConfig(task=task, lr=cfg.lr, batch_size=cfg.batch_size, alpha=cfg.alpha,
                       proximal_mu=cfg.proximal_mu)


def trainable_groups(data: SiteData, model: MoEHealth, phase: Phase,
                     rule: AggregationRule = AggregationRule.MODALITY_AWARE,
                     min_cell_size: int = 1) -> dict[str, int]:
    """Groups this site can train in ``phase``, each with its aggregation weight: the training
    samples behind it, counted over the released cells only (combinations with at least
    ``min_cell_size`` samples, client/rounds/disclosure.py), so no combination of weights reveals
    a small cell; a group no released cell drives is neither trained nor sent.

    ``rule="fedavg-all"`` is the plain-FedAvg baseline: every group, weighted by the site's size.
    """
    cells = released_cells(data.combination_counts("train"), min_cell_size)
    total = sum(cells.values())
    if rule == AggregationRule.FEDAVG_ALL:
        return dict.fromkeys(group_names(model), total) if total else {}
    counts: dict[str, int] = {}
    for group in group_names(model):
        kind, _, name = group.partition(".")
        if kind == "encoders":
            counts[group] = cells_with(cells, name)
        elif kind == "missing":
            counts[group] = cells_with(cells, name, present=False)
        elif kind == "experts":
            counts[group] = cells.get(name, 0)
        elif kind == "gate":
            counts[group] = total if phase == Phase.JOINT else 0
        else:  # head
            counts[group] = total
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
    optimizer: torch.optim.Optimizer | None  # None: nothing to train (no group chosen)
    loader: DataLoader
    device: torch.device


def declared_groups(model: MoEHealth, modalities: tuple[str, ...], phase: Phase, weight: int,
                    encoders: bool = True) -> dict[str, int]:
    """Groups a DP site trains, decided from its declared modalities, never from its data, each
    with the same public aggregation weight: encoders of the declared modalities, the missing
    indicators of notes and CXR (EHR is what every site has: its indicator would be trained on
    noise alone), the experts of the combinations of declared modalities that include EHR, the
    gate (joint phase) or the fusion head. ``encoders=False`` (DP ``train: fusion``): no encoder;
    they keep the global values, e.g. pre-trained on public data."""
    have = set(modalities)

    def allowed(group: str) -> bool:
        kind, _, name = group.partition(".")
        if kind == "encoders":
            return encoders and name in have
        if kind == "missing":
            return name != Modality.EHR
        if kind == "experts":
            return set(name.split("+")) <= have and Modality.EHR in name.split("+")
        return kind != "gate" or phase == Phase.JOINT

    return {group: weight for group in group_names(model) if allowed(group)}


def setup_round(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                cfg: RoundConfig, *,
                choose_groups: Callable[[MoEHealth], dict[str, int]],
                seed: int | None = None, batch_size: int | None = None) -> RoundSetup:
    """The model, loader and optimizer of one local round; shared by non-DP and DP training.

    Args:
        data: the site's samples and cached features.
        model_config, global_arrays: the run's model and the global weights the server sent.
        cfg: the round's values from the server (phase, lr, batch size, epochs).
        choose_groups: the groups to train with their aggregation weights (non-DP: from the
            site's data under the release rule, :func:`trainable_groups`; DP: declared, public,
            :func:`declared_groups`).
        seed: of dropout and batch sampling (default: the server's seed + round, so non-DP runs
            are reproducible; DP sites pass private randomness the server cannot know).
        batch_size: overrides ``cfg.batch_size`` (a DP site's own expected Poisson batch).

    Returns:
        The round's :class:`RoundSetup`; only the chosen groups' parameters require gradients.
    """
    device = resolve_device()
    seed = cfg.seed + cfg.server_round if seed is None else seed
    torch.manual_seed(seed)
    model = prepare_model(model_config, global_arrays, device)
    model.set_phase(str(cfg.phase))
    weights = choose_groups(model)
    for name, param in model.named_parameters():
        param.requires_grad_(parameter_group(name) in weights)
    train_cfg = train_config(cfg, data.task)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, train_cfg) if trainable else None
    loader = make_loader(data.subset("train"), batch_size or cfg.batch_size, seed)
    return RoundSetup(model, weights, train_cfg, optimizer, loader, device)


def local_train(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                cfg: RoundConfig, site_id: str, min_cell_size: int = MIN_CELL_SIZE) -> TrainReply:
    """Train the site's groups for ``cfg.local_epochs``; the reply carries only those groups
    (none that fewer than ``min_cell_size`` samples drive; with none left, the site declines)."""
    setup = setup_round(data, model_config, global_arrays, cfg, choose_groups=lambda m: trainable_groups(
        data, m, cfg.phase, cfg.aggregation_rule, min_cell_size))
    if not setup.weights:
        return TrainReply(site_id, {}, {}, SiteStatus.DECLINED,
                          f"no parameter group has {min_cell_size} training samples "
                          "(the site's min-cell-size)")
    model, weights, train_cfg, device = setup.model, setup.weights, setup.train_cfg, setup.device
    optimizer, loader = setup.optimizer, setup.loader
    anchor = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
              if cfg.proximal_mu > 0 else None)
    losses = [train_epoch(model, loader, optimizer, train_cfg, device, anchor)
              for _ in range(cfg.local_epochs)]
    return TrainReply(site_id, model_to_arrays(model, groups=weights), weights,
                      train_loss=losses[-1], train_examples=sum(released_cells(
                          data.combination_counts("train"), min_cell_size).values()))


def local_evaluate(data: SiteData, model_config: ModelConfig, global_arrays: dict[str, np.ndarray],
                   site_id: str, min_cell_size: int = MIN_CELL_SIZE) -> EvaluateReply:
    """Metrics of the global model on this site's validation and test splits under the release
    rule of client/rounds/disclosure.py: aggregates over released cells only, metrics only where
    both classes reach ``min_cell_size``. The F1 threshold is chosen on validation and stays at
    the site."""
    from client.rounds.clinical import stay_subgroups, subgroup_metrics
    from client.rounds.evaluation import (  # scikit-learn: only for evaluation messages
        best_f1_threshold,
        bootstrap_auroc,
        evaluate_predictions,
        routing_table,
    )

    device = resolve_device()
    model = prepare_model(model_config, global_arrays, device)
    splits: dict[str, dict[str, float]] = {}
    threshold = 0.5
    by_combination: dict[str, dict[str, float]] = {}
    routing: dict[str, dict[str, float]] = {}
    subgroups: dict[str, float] = {}
    test_n = 0
    for split in SPLITS:
        if data.size(split) == 0:
            continue
        stays = data.subset(split)
        pred = predict(model, stays, device)
        if split == "val":  # F1 threshold chosen on all validation patients, applied to test
            threshold = best_f1_threshold(pred.labels, pred.probs)
        released = released_predictions(pred, min_cell_size)
        metrics_released = classes_large_enough(released.labels, min_cell_size)
        if metrics_released:
            result = evaluate_predictions(released, threshold)
            splits[split] = {key: result[key] for key in SPLIT_METRICS}
        if split != "test" or len(released.labels) == 0:
            continue
        test_n = len(released.labels)
        if metrics_released:
            low, high = bootstrap_auroc(released.labels, released.probs)
            splits[split] |= {"auroc_low": low, "auroc_high": high,
                              "positives": float(released.labels.sum())}
            mask = released_mask(pred, min_cell_size)
            groups = {k: v[mask] for k, v in stay_subgroups(stays, pred.combo).items()}
            subgroups = subgroup_metrics(released.labels, released.probs, groups, min_cell_size)
        by_combination = {combo: {"n": n} for combo, n in cell_sizes(released).items()}
        if metrics_released and cell_metrics_releasable(released, min_cell_size):
            for combo, res in result["by_combination"].items():
                by_combination[combo]["auroc"] = res["auroc"]
        routing = routing_table(released)
    return EvaluateReply(site_id, test_n, splits, by_combination, routing, subgroups)
