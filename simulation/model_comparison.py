"""Centralized MoE-Health against its baselines on the benchmark's test set, with intervals.

Every neural variant trains on the pooled sites' training split (early stopping on validation
loss); its learning rate is chosen among ``lrs`` by the validation loss of the first seed, never
by test. Each model is scored on the same test stays (the independent test population under the
benchmark preset): AUROC with a 95% bootstrap interval, the fraction of the reachable ceiling, and
for unimodal variants also the AUROC on the stays that have their modality. Paired bootstrap
differences compare MoE-Health with every other model, per seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from shared_model.modalities import MODALITIES
from simulation.baselines import VARIANTS, variant_model_config
from simulation.bootstrap import Interval, auroc_interval, paired_difference
from simulation.centralized import CentralizedConfig, train_centralized
from simulation.prepare import FederationData
from simulation.step_progress import StepLog
from simulation.tabular_baselines import benchmark_splits, ceiling_scores, tabular_scores

log = logging.getLogger(__name__)
REFERENCE = "moe-health"
REACHABLE = "reachable ceiling, all modalities"


def _choose_lr(splits, name: str, lrs: list[float], config: dict) -> float:
    """The learning rate with the lowest validation loss on the first seed."""
    if len(lrs) == 1:
        return lrs[0]
    losses = {}
    for lr in lrs:
        result = train_centralized(splits.pooled, variant_model_config(name),
                                   CentralizedConfig(task=splits.task, lr=lr, **config),
                                   pretrain=VARIANTS[name].pretrain_experts)
        losses[lr] = result.val_loss
        log.info("%s lr %g: validation loss %.4f", name, lr, result.val_loss)
    return min(losses, key=losses.get)


def _own_modality(name: str) -> int | None:
    """Index of the single modality a unimodal variant uses (None for multimodal variants)."""
    used = VARIANTS[name].model.get("modalities")
    if used and len(used) == 1:
        return [m.value for m in MODALITIES].index(used[0])
    return None


def compare_models(data: FederationData, task: str, variants: Iterable[str], seeds: Iterable[int],
                   lrs: Iterable[float] = (1e-4,), train: dict | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Centralized variants against the ceilings and tuned tabular baselines on one test set.

    Args:
        data: the federation (its sites pooled for training; its test population, if any, scored).
        task: the prediction task.
        variants, seeds: neural models (simulation/baselines.py) and seeds to train.
        lrs: learning rates; each variant's is chosen by validation loss on the first seed.
        train: ``CentralizedConfig`` overrides (epochs, batch size).

    Returns:
        Rows per model and seed (AUROC with interval, fraction of the reachable ceiling), and
        paired differences of MoE-Health against each other model.
    """
    splits = benchmark_splits(data, task)
    labels = splits.labels()
    available = splits.test.inputs["available"].numpy()[splits.test.split == "test"] > 0.5
    ceilings = ceiling_scores(splits)
    reachable = roc_auc_score(labels, ceilings[REACHABLE]) if REACHABLE in ceilings else np.nan
    tabular, chosen, _ = tabular_scores(splits)
    train = dict(train or {})
    rows, scores = [], {}
    for name, score in {**ceilings, **tabular}.items():
        rows.append(_row(task, name, None, labels, score, reachable, splits.test_name,
                         chosen.get(name, "")))
    variants, seeds = list(variants), list(seeds)
    steps = StepLog(len(variants) * len(seeds), f"models ({task})")
    for name in variants:
        lr = _choose_lr(splits, name, list(lrs), {**train, "seed": min(seeds)})
        for seed in seeds:
            steps.start(f"{name} seed {seed}")
            started = time.perf_counter()
            result = train_centralized(splits.pooled, variant_model_config(name),
                                       CentralizedConfig(task=task, lr=lr, seed=seed, **train),
                                       pretrain=VARIANTS[name].pretrain_experts,
                                       test_data=splits.test)
            steps.finish(f"{name} seed {seed}", time.perf_counter() - started)
            scores[(name, seed)] = result.test_probs
            row = _row(task, name, seed, labels, result.test_probs, reachable, splits.test_name,
                       f"lr {lr:g}", result.epochs)
            own = _own_modality(name)
            if own is not None:
                row["auroc_with_its_modality"] = auroc_interval(
                    labels[available[:, own]], result.test_probs[available[:, own]]).value
            rows.append(row)
            log.info("%s seed %d: test AUROC %.3f (%d epochs)", name, seed, row["auroc"],
                     result.epochs)
    diffs = []
    for seed in seeds:
        if (REFERENCE, seed) not in scores:
            continue
        others = {f"{n} (seed {s})": p for (n, s), p in scores.items() if s == seed and n != REFERENCE}
        others |= tabular
        for other, probs in others.items():
            diff = paired_difference(labels, scores[(REFERENCE, seed)], probs)
            diffs.append({"task": task, "seed": seed,
                          "comparison": f"{REFERENCE} (seed {seed}) - {other}",
                          "difference": diff.value, "low": diff.low, "high": diff.high,
                          "interval_excludes_0": diff.excludes_zero()})
    return pd.DataFrame(rows), pd.DataFrame(diffs)


def _row(task, name, seed, labels, score, reachable, test_name, chosen, epochs=None) -> dict:
    auroc = auroc_interval(labels, score)
    return {"task": task, "model": name, "seed": seed, "test_set": test_name, "n": len(labels),
            "positives": int(labels.sum()), "auroc": auroc.value, "auroc_low": auroc.low,
            "auroc_high": auroc.high, "fraction_of_reachable": auroc.value / reachable,
            "chosen_on_validation": chosen, "epochs": epochs}


def comparison_markdown(rows: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """Per task: every model's AUROC with interval, and the paired differences."""
    lines = []
    for task, group in rows.groupby("task", sort=False):
        first = group.iloc[0]
        lines += [f"### {task}: {first.test_set}, n = {first.n}, positives = {first.positives}", "",
                  "| model | seed | AUROC [95% CI] | fraction of reachable ceiling | AUROC on stays "
                  "with its modality | chosen on validation | epochs |", "|---|---|---|---|---|---|---|"]
        for r in group.itertuples():
            own = getattr(r, "auroc_with_its_modality", np.nan)
            lines.append(f"| {r.model} | {'' if pd.isna(r.seed) else int(r.seed)} | "
                         f"{Interval(r.auroc, r.auroc_low, r.auroc_high)} | "
                         f"{r.fraction_of_reachable:.3f} | {'' if pd.isna(own) else f'{own:.3f}'} | "
                         f"{r.chosen_on_validation} | {'' if pd.isna(r.epochs) else int(r.epochs)} |")
        lines += ["", "| paired difference | AUROC difference [95% CI] | interval excludes 0 |",
                  "|---|---|---|"]
        for d in diffs[diffs.task == task].itertuples():
            lines.append(f"| {d.comparison} | {Interval(d.difference, d.low, d.high).signed()} | "
                         f"{'yes' if d.interval_excludes_0 else 'no'} |")
        lines.append("")
    return "\n".join(lines)
