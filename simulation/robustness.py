"""Robustness to missing modalities at test time (issue 29, ``moehealth experiment robustness``).

Every model is trained once, on the pooled training split (hyper-parameters on validation), and
scored on the test set (the independent test population when there is one) as it is and with
modality m removed from a fraction f of the test stays that have it: its features zeroed and its
availability flag off, exactly as a stay that never had it looks to every model (MoE-Health then
uses its learned missing indicator and the expert of the remaining combination; the tabular
baselines see their missingness flag). The same stays lose the modality for every model (a seeded
draw per modality and fraction), so the curves are paired. AUROC with 95% bootstrap intervals;
the drop from f = 0 with a paired interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from client.data.dataset import SiteData
from client.rounds.training import predict, resolve_device
from shared_model.modalities import MODALITIES
from simulation.baselines import VARIANTS, variant_model_config
from simulation.bootstrap import Interval, auroc_interval, paired_difference
from simulation.centralized import CentralizedConfig, train_centralized
from simulation.prepare import FederationData
from simulation.step_progress import StepLog
from simulation.tabular_baselines import benchmark_splits, fit_baselines, split_table

log = logging.getLogger(__name__)
FRACTIONS = (0.0, 0.25, 0.5, 1.0)
REFERENCE = "moe-health"
REMOVABLE = ("notes", "cxr")


def without_modality(data: SiteData, modality: str, fraction: float, seed: int = 0) -> SiteData:
    """``data`` with ``modality`` removed from ``fraction`` of its test stays that have it
    (features zeroed, availability off); the chosen stays depend only on the seed, modality and
    fraction, and a larger fraction removes a superset of a smaller one's stays."""
    column = [m.value for m in MODALITIES].index(modality)
    available = data.inputs["available"].numpy()
    have = np.flatnonzero((data.split == "test") & (available[:, column] > 0.5))
    order = np.random.default_rng([seed, column]).permutation(have)
    removed = torch.as_tensor(order[: int(round(fraction * len(have)))])
    inputs = {k: v.clone() for k, v in data.inputs.items()}
    inputs[modality][removed] = 0.0
    inputs["available"][removed, column] = 0.0
    return replace(data, inputs=inputs)


def robustness(out: Path, data: FederationData, task: str, variants: Iterable[str],
               seeds: Iterable[int], lr: float = 1e-4, train: dict | None = None,
               fractions: Iterable[float] = FRACTIONS,
               modalities: Iterable[str] = REMOVABLE) -> pd.DataFrame:
    """Every model scored with a modality removed from a fraction of the test stays that have it.

    Args:
        out: folder for ``results.md``, ``results.csv`` and one PNG per modality.
        data, task: the federation (pooled for training) and the prediction task.
        variants, seeds, lr, train: neural models, their seeds, learning rate and
            ``CentralizedConfig`` overrides.
        fractions: fractions of the stays with the modality that lose it (the same stays for
            every model).
        modalities: which modalities to remove, one at a time.

    Returns:
        Rows per model, seed, modality and fraction: AUROC with interval and the paired drop from
        the complete test set.
    """
    splits = benchmark_splits(data, task)
    labels = splits.labels()
    tests = {(m, f): without_modality(splits.test, m, f) for m in modalities for f in fractions}
    scorers = {name: (None, lambda t, model=model: model.scores(split_table(t, "test")))
               for name, model in fit_baselines(splits).items()}
    device = resolve_device()
    variants, seeds = list(variants), list(seeds)
    steps = StepLog(len(variants) * len(seeds), "robustness")
    for name in variants:
        for seed in seeds:
            steps.start(f"{name} seed {seed}")
            started = time.perf_counter()
            result = train_centralized(splits.pooled, variant_model_config(name),
                                       CentralizedConfig(task=task, lr=lr, seed=seed, **(train or {})),
                                       pretrain=VARIANTS[name].pretrain_experts)
            steps.finish(f"{name} seed {seed}", time.perf_counter() - started)
            scorers[f"{name} (seed {seed})"] = (seed, lambda t, model=result.model: predict(
                model, t.subset("test"), device).probs)
    rows, scored = [], {}
    for name, (seed, score) in scorers.items():
        for modality in modalities:
            complete = score(tests[(modality, 0.0)])
            for fraction in fractions:
                probs = complete if fraction == 0 else score(tests[(modality, fraction)])
                scored[(name, modality, fraction)] = probs
                auroc = auroc_interval(labels, probs)
                drop = paired_difference(labels, probs, complete)
                rows.append({"task": task, "model": name, "seed": seed, "modality": modality,
                             "fraction_removed": fraction, "test_set": splits.test_name,
                             "n": len(labels), "positives": int(labels.sum()),
                             "auroc": auroc.value, "auroc_low": auroc.low,
                             "auroc_high": auroc.high, "change": drop.value,
                             "change_low": drop.low, "change_high": drop.high})
            log.info("%s / %s: %s", name, modality, [round(r["auroc"], 3) for r in rows[-4:]])
    frame = pd.DataFrame(rows)
    write_robustness(out, frame, paired_against_moe_health(labels, scored, task))
    return frame


def paired_against_moe_health(labels: np.ndarray, scored: dict, task: str) -> pd.DataFrame:
    """Each MoE-Health run minus every other model on the same stays, per modality and
    fraction removed (paired 95% bootstrap intervals)."""
    rows = []
    references = sorted({name for name, _, _ in scored if name.startswith(f"{REFERENCE} (")})
    for reference in references:
        for (name, modality, fraction), probs in scored.items():
            if name == reference or name.startswith(f"{REFERENCE} ("):
                continue
            diff = paired_difference(labels, scored[(reference, modality, fraction)], probs)
            rows.append({"task": task, "comparison": f"{reference} - {name}",
                         "modality": modality, "fraction_removed": fraction,
                         "difference": diff.value, "low": diff.low, "high": diff.high})
    return pd.DataFrame(rows)


def write_robustness(out: Path, frame: pd.DataFrame, diffs: pd.DataFrame | None = None) -> None:
    """``results.csv``, ``differences.csv``, ``results.md`` (per modality: AUROC per fraction
    removed, then MoE-Health's paired differences) and ``robustness-<m>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    diffs = diffs if diffs is not None else pd.DataFrame()
    diffs.to_csv(out / "differences.csv", index=False)
    first = frame.iloc[0]
    lines = [f"# Robustness to a modality missing at test time ({first.task})", "",
             f"Test set: {first.test_set}, n = {first.n}, positives = {first.positives}. The "
             "modality is removed from a fraction of the test stays that have it (the same stays "
             "for every model); change: AUROC minus the complete test set's, paired 95% "
             "bootstrap interval.", ""]
    fractions = sorted(frame.fraction_removed.unique())
    for modality, group in frame.groupby("modality", sort=False):
        lines += [f"## {modality} removed", "",
                  "| model | " + " | ".join(f"{f:.0%} removed" for f in fractions) + " |",
                  "|---|" + "---|" * len(fractions)]
        for model, rows in group.groupby("model", sort=False):
            cells = []
            for r in rows.sort_values("fraction_removed").itertuples():
                text = str(Interval(r.auroc, r.auroc_low, r.auroc_high))
                if r.fraction_removed > 0:
                    text += f"; {Interval(r.change, r.change_low, r.change_high).signed()}"
                cells.append(text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
        if len(diffs):
            mine = diffs[diffs.modality == modality]
            lines += ["| paired difference | " + " | ".join(f"{f:.0%} removed" for f in fractions)
                      + " |", "|---|" + "---|" * len(fractions)]
            for comparison, rows in mine.groupby("comparison", sort=False):
                rows = rows.sort_values("fraction_removed")
                lines.append(f"| {comparison} | " + " | ".join(
                    Interval(r.difference, r.low, r.high).signed() for r in rows.itertuples())
                    + " |")
            lines.append("")
        _plot(group, out / f"robustness-{modality}.png", modality)
    (out / "results.md").write_text("\n".join(lines))


SHOWN_BASELINES = ("logistic regression, all modalities", "logistic regression, pattern submodels",
                   "gradient boosting, all modalities")


def _seed_of(name: str) -> str:
    return name.rsplit("(", 1)[1].rstrip(")") if name.endswith(")") else ""


def _shown(comparison: str) -> bool:
    """A paired difference worth a row in the docs: MoE-Health against the strong tabular
    baselines, and against each other neural model of the same seed."""
    reference, other = comparison.split(" - ", 1)
    return other in SHOWN_BASELINES or (_seed_of(other) != "" and
                                        _seed_of(other) == _seed_of(reference))


def robustness_markdown(frame: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """The docs' view of a robustness result: every model on the complete test set, MoE-Health's
    paired differences there and at each fraction removed (against the strong baselines and the
    other neural models of its seed), and each model's change per fraction removed."""
    first = frame.iloc[0]
    fractions = sorted(frame.fraction_removed.unique())
    removed = [f for f in fractions if f > 0]
    complete = frame[frame.fraction_removed == 0].drop_duplicates("model")
    lines = [f"Test set: {first.test_set}, n = {first.n}, positives = {first.positives}.", "",
             "| model | AUROC [95% CI], complete test set |", "|---|---|"]
    lines += [f"| {r.model} | {Interval(r.auroc, r.auroc_low, r.auroc_high)} |"
              for r in complete.itertuples()]
    for modality, group in frame.groupby("modality", sort=False):
        lines += ["", f"Change in AUROC when {modality} is removed from a fraction of the test "
                  "stays that have it (paired 95% intervals):", "",
                  "| model | " + " | ".join(f"{f:.0%}" for f in removed) + " |",
                  "|---|" + "---|" * len(removed)]
        for model, rows in group.groupby("model", sort=False):
            rows = rows[rows.fraction_removed > 0].sort_values("fraction_removed")
            lines.append(f"| {model} | " + " | ".join(
                Interval(r.change, r.change_low, r.change_high).signed()
                for r in rows.itertuples()) + " |")
        mine = diffs[(diffs.modality == modality) & diffs.comparison.map(_shown)]
        if len(mine):
            lines += ["", f"MoE-Health minus each model with {modality} removed (paired 95% "
                      "intervals; 0% is the complete test set):", "",
                      "| paired difference | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
                      "|---|" + "---|" * len(fractions)]
            for comparison, rows in mine.groupby("comparison", sort=False):
                rows = rows.sort_values("fraction_removed")
                lines.append(f"| {comparison} | " + " | ".join(
                    Interval(r.difference, r.low, r.high).signed() for r in rows.itertuples())
                    + " |")
    return "\n".join(lines) + "\n"


def _plot(group: pd.DataFrame, path: Path, modality: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, rows in group.groupby("model", sort=False):
        rows = rows.sort_values("fraction_removed")
        x = rows.fraction_removed.to_numpy()
        ax.plot(x, rows.auroc, marker="o", label=model)
        ax.fill_between(x, rows.auroc_low, rows.auroc_high, alpha=0.12)
    ax.set_xlabel(f"fraction of test stays with {modality} that lose it")
    ax.set_ylabel("test AUROC (95% bootstrap interval)")
    ax.set_title(f"Robustness: {modality} missing at test time")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
