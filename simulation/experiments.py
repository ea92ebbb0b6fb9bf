"""Experiment drivers: federated vs pooled vs local-only, ablations, modality heterogeneity and
privacy-utility. Each writes ``results.csv``, ``results.md`` and a PNG into its output folder.

Federated runs go through a private simulation SuperLink (the real `flwr run` path); pooled and
local-only baselines train the same model on the same sites' data with the same epoch budget
(pre-training epochs = pre-training rounds, joint epochs = joint rounds x local epochs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.data.dataset import SiteData
from client.rounds.disclosure import classes_large_enough
from client.rounds.personalize import FineTuneConfig, fine_tune
from client.rounds.site_local import SiteLocalParts, local_parts_path
from client.rounds.training import predict, resolve_device
from client.site.manifest import MANIFEST_NAME, read_manifest
from client.site.runtime import state_dir
from server.run_dir import RunDirectory
from server.settings import FederationSettings
from shared_model import ModelConfig, build_model
from shared_model.bootstrap import RankedScores
from shared_model.errors import MoeHealthInputError
from shared_model.ledger import read_ledger
from shared_model.moe import MoEHealth
from shared_model.params import load_arrays, model_to_arrays
from shared_model.protocol import MIN_CELL_SIZE, NodeConfigKey, pooled_key, split_key
from shared_model.run_config import SITE_LOCAL_GROUPS, site_local_groups
from simulation.baselines import (
    FEDERATED_ABLATIONS,
    VARIANTS,
    aggregation_run_config,
    check_variants,
    is_moe,
    variant_model_config,
)
from simulation.bootstrap import auroc_interval, paired_difference
from simulation.centralized import CentralizedConfig, train_centralized
from simulation.local_superlink import local_simulation
from simulation.prepare import FederationData, prepare_sites
from simulation.step_progress import StepLog
from simulation.tabular_baselines import BenchmarkSplits, benchmark_splits, ceiling_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Rounds of the federation; the baselines get the same number of epochs."""

    rounds: int = FederationSettings.num_rounds
    pretrain_rounds: int = FederationSettings.pretrain_rounds
    local_epochs: int = FederationSettings.local_epochs
    lr: float = FederationSettings.lr

    def run_config(self) -> dict[str, object]:
        # experiments score the final model only: no evaluation rounds before it (evaluate-every)
        return {"num-server-rounds": self.rounds, "pretrain-rounds": self.pretrain_rounds,
                "local-epochs": self.local_epochs, "lr": self.lr, "evaluate-every": self.rounds}

    def train_config(self, task: str, seed: int) -> CentralizedConfig:
        joint = (self.rounds - self.pretrain_rounds) * self.local_epochs
        return CentralizedConfig(task=task, lr=self.lr, max_epochs=joint, patience=joint + 1,
                           pretrain_epochs=self.pretrain_rounds * self.local_epochs, seed=seed)


def run_federation(workdir: Path, data: FederationData, budget: Budget, extra: dict[str, object],
                   name: str, progress: StepLog | None = None) -> dict:
    """One `flwr run` of the app; returns final pooled and per-site test metrics and timings."""
    if progress:
        progress.start(name)
    run_dir = workdir / "runs" / name
    config = {**budget.run_config(), **data.run_config(), "run-dir": str(run_dir), **extra}
    with local_simulation(workdir / "flwr" / name) as sim:
        outcome = sim.run(config, num_supernodes=data.num_sites, timeout=3600)
    if not outcome.ok:
        raise RuntimeError(f"federated run {name} failed ({outcome.status}):\n{outcome.log[-3000:]}")
    if progress:
        progress.finish(name, outcome.seconds)
    rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    sites = [json.loads(x) for x in (run_dir / "site_metrics.jsonl").read_text().splitlines()]
    last = max(r["round"] for r in rounds)
    per_site = {s["site"]: s for s in sites if s["kind"] == "evaluate" and s["round"] == last}
    bytes_in = [sum(r["bytes_received"].values()) / max(len(r["bytes_received"]), 1)
                for r in rounds if r["kind"] == "train" and r["bytes_received"]]
    return {"seconds": outcome.seconds, "run_dir": str(run_dir), "run_id": outcome.run_id,
            "per_site": per_site,
            "pooled_auroc": next((r[pooled_key("auroc")] for r in reversed(rounds)
                                  if r["kind"] == "centralized-eval"), math.nan),
            "mean_bytes_per_site_round":
            float(np.mean(bytes_in)) if bytes_in else math.nan}


def _sites(data: FederationData, task: str) -> dict[str, SiteData]:
    return {s: SiteData.load(d, task, s) for s, d in prepare_sites(data).items()}


def _test_probs(model: MoEHealth, test: SiteData) -> np.ndarray:
    return predict(model, test.subset("test"), resolve_device()).probs


def site_local_models(run_dir: Path, run_id: int, groups: tuple[str, ...],
                      model_config: ModelConfig | None = None) -> dict[str, MoEHealth]:
    """Each simulated site's own model of a ``site-local-groups`` run: the run's last global
    model with the groups the site kept (in its state folder, named by the sites manifest)."""
    _, arrays, _, _ = RunDirectory(run_dir).load_latest()
    models = {}
    for entry in read_manifest(run_dir / MANIFEST_NAME):
        site = str(entry[NodeConfigKey.SITE_ID])
        parts = SiteLocalParts(groups, local_parts_path(state_dir(entry), run_id))
        if not parts.path.is_file():
            raise RuntimeError(f"{site}: no site-local groups at {parts.path} (did it train?)")
        models[site] = build_model(model_config)
        load_arrays(models[site], parts.applied_to(arrays))
    return models


def federated_model(run_dir: Path, model_config: ModelConfig) -> MoEHealth:
    """The global model of a run's last intact checkpoint."""
    _, arrays, _, _ = RunDirectory(run_dir).load_latest()
    model = build_model(model_config)
    load_arrays(model, arrays)
    return model


def fl_vs_central(out: Path, data: FederationData, tasks: Iterable[str], seeds: Iterable[int],
                  budget: Budget = Budget()) -> pd.DataFrame:
    """Experiment 1: federated vs pooled (centralized) vs each site alone, per task and seed, all
    scored on one test set (the independent test population when the federation has one) with
    95% bootstrap intervals; paired differences in ``paired.md``."""
    rows, paired = [], []
    tasks, seeds = list(tasks), list(seeds)
    # every training is a step: the federation, the pooled model and each site alone
    progress = StepLog(len(tasks) * len(seeds) * (2 + data.num_sites), "fl-vs-central")
    for task in tasks:
        splits = benchmark_splits(data, task)
        sites = _sites(data, task)
        labels = splits.labels()
        reachable = ceiling_scores(splits).get("reachable ceiling, all modalities")
        base = {"task": task, "test_set": f"{splits.test_name} (n {len(labels)}, positives "
                                          f"{int(labels.sum())})",
                "reachable_auroc": RankedScores(labels, reachable).auroc()
                if reachable is not None else math.nan}
        for seed in seeds:
            fl = run_federation(out, data, budget, {"task": task, "seed": seed}, f"{task}-seed{seed}",
                                progress)
            scores = {"federated": _test_probs(federated_model(Path(fl["run_dir"]), ModelConfig()),
                                               splits.test)}
            seconds = {"federated": fl["seconds"]}
            trainees = {"pooled (centralized)": splits.pooled,
                        **{f"local-only {name}": site for name, site in sites.items()}}
            pooled_val = splits.pooled.subset("val")
            val_auroc: dict[str, float] = {}  # each local model on every site's validation stays
            for setting, train_data in trainees.items():
                step = f"{task}-seed{seed} {setting}"
                progress.start(step)
                started = time.perf_counter()
                result = train_centralized(train_data, ModelConfig(),
                                           budget.train_config(task, seed), test_data=splits.test)
                scores[setting] = result.test_probs
                seconds[setting] = time.perf_counter() - started
                if setting.startswith("local-only"):
                    val = predict(result.model, pooled_val, resolve_device())
                    val_auroc[setting] = RankedScores(val.labels, val.probs).auroc()
                progress.finish(step, seconds[setting])
            for setting, probs in scores.items():
                interval = auroc_interval(labels, probs)
                rows.append({**base, "seed": seed, "setting": setting, "test_auroc": interval.value,
                             "low": interval.low, "high": interval.high,
                             "seconds": seconds[setting]})
            # the best single site is chosen on validation (the pooled validation split of all
            # sites), never on the test set it is then compared on
            best_local = max(val_auroc, key=lambda k: val_auroc[k])
            for first, second in (("federated", "pooled (centralized)"), ("federated", best_local)):
                diff = paired_difference(labels, scores[first], scores[second])
                paired.append({"task": task, "seed": seed, "comparison": f"{first} - {second}",
                               "difference": diff.value, "low": diff.low, "high": diff.high})
            log.info("%s seed %d done", task, seed)
    frame = pd.DataFrame(rows)
    frame["fraction_of_reachable"] = frame["test_auroc"] / frame["reachable_auroc"]
    write_results(out, frame, ["task", "setting"], "test_auroc",
                  "Federated vs pooled vs local-only (test AUROC)")
    diffs = pd.DataFrame(paired)
    diffs.to_csv(out / "differences.csv", index=False)
    (out / "paired.md").write_text("# Federated vs pooled vs local-only\n\n"
                                   + fl_vs_central_markdown(frame, diffs))
    return frame


def fl_vs_central_markdown(frame: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """Per task: every model's test AUROC with its 95% interval per seed, then the paired
    differences of the federated model against the pooled one and the best single site (chosen
    on the pooled validation split)."""
    parts = []
    for task, rows in frame.groupby("task", sort=False):
        seeds = sorted(rows.seed.unique())
        header = "| model | " + " | ".join(f"seed {s}" for s in seeds) + " |"
        lines = [f"### {task}: {rows.test_set.iloc[0]}", "", header,
                 "|---" * (len(seeds) + 1) + "|"]
        for setting, runs in rows.groupby("setting", sort=False):
            by_seed = {r.seed: f"{r.test_auroc:.3f} [{r.low:.3f}, {r.high:.3f}]"
                       for r in runs.itertuples()}
            lines.append(f"| {setting} | " + " | ".join(by_seed.get(s, "") for s in seeds) + " |")
        lines += ["", "Paired differences on the same test stays (95% paired bootstrap); the best "
                  "single site is the one whose model scores highest on the pooled validation "
                  "split of all sites, never chosen on this test set:", "",
                  "| seed | comparison | AUROC difference [95% CI] |", "|---|---|---|"]
        for d in diffs[diffs.task == task].itertuples():
            verdict = "" if d.low > 0 or d.high < 0 else " (no measurable difference)"
            lines.append(f"| {d.seed} | {d.comparison} | {d.difference:+.3f} "
                         f"[{d.low:+.3f}, {d.high:+.3f}]{verdict} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _scored_runs(task: str, data: FederationData) -> tuple[BenchmarkSplits, np.ndarray]:
    splits = benchmark_splits(data, task)
    return splits, splits.labels()


def _paired_rows(labels: np.ndarray, scores: dict[str, np.ndarray],
                 pairs: Iterable[tuple[str, str]], seed: int, prefix: str = "") -> list[dict]:
    """``differences.csv`` rows: ``first - second`` on the same test stays with its 95% paired
    bootstrap interval, named ``prefix + "first - second"``."""
    out = []
    for first, second in pairs:
        diff = paired_difference(labels, scores[first], scores[second])
        out.append({"seed": seed, "comparison": f"{prefix}{first} - {second}",
                    "difference": diff.value, "low": diff.low, "high": diff.high})
    return out


# per-run columns a runs table shows beside the AUROCs: header, format, how seeds combine
RUN_COLUMNS: dict[str, tuple[str, Callable[[pd.Series], str]]] = {
    "max_site_epsilon_spent": ("epsilon spent (largest site, any seed)",
                               lambda v: f"{v.max():.3f}" if v.notna().any() else "-"),
    "mean_bytes_per_site_round": ("upload per site and round (kB, mean over seeds)",
                                  lambda v: f"{v.mean() / 1000:,.0f}" if v.notna().any() else ""),
    "chosen_epoch": ("fine-tuning epochs kept per seed (0: the global model)",
                     lambda v: " / ".join(str(int(e)) for e in v) if v.notna().all() else ""),
}


def runs_markdown(frame: pd.DataFrame, diffs: pd.DataFrame, label: str) -> str:
    """One row per run (``label``) with its test AUROC [95% CI] per seed, then one row per paired
    difference per seed; a difference whose interval excludes 0 is in bold."""
    seeds = sorted(frame.seed.unique())
    shown = [c for c in RUN_COLUMNS if c in frame and frame[c].notna().any()]
    seed_cells = " | ".join(f"seed {s}" for s in seeds)
    header = [label, *(f"seed {s}" for s in seeds), *(RUN_COLUMNS[c][0] for c in shown)]
    test_sets = list(dict.fromkeys(frame.test_set))  # several: each run's label names its own
    lines = ([f"Test set: {test_sets[0]}.", ""] if len(test_sets) == 1 else
             ["Test sets: " + "; ".join(test_sets) + ".", ""])
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, runs in frame.groupby(label, sort=False):
        by_seed = {r.seed: f"{r.test_auroc:.3f} [{r.low:.3f}, {r.high:.3f}]"
                   for r in runs.itertuples()}
        extra = [RUN_COLUMNS[c][1](runs[c]) for c in shown]
        lines.append(f"| {name} | " + " | ".join(by_seed.get(s, "not run") for s in seeds)
                     + " |" + "".join(f" {e} |" for e in extra))
    lines += ["", "Paired differences on the same test stays (95% paired bootstrap interval; "
              "**bold**: the interval excludes 0):", "", f"| comparison | {seed_cells} |",
              "|---" * (len(seeds) + 1) + "|"]
    for comparison, rows in diffs.groupby("comparison", sort=False):
        cells = {}
        for d in rows.itertuples():
            text = f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
            cells[d.seed] = f"**{text}**" if d.low > 0 or d.high < 0 else text
        lines.append(f"| {comparison} | " + " | ".join(cells.get(s, "not run") for s in seeds)
                     + " |")
    return "\n".join(lines) + "\n"


def _write_runs(out: Path, frame: pd.DataFrame, diffs: pd.DataFrame, label: str,
                title: str) -> None:
    """results.csv / .md / .png, differences.csv and ``paired.md`` (the table bench/tables.py
    renders from the two CSVs)."""
    write_results(out, frame, [label], "test_auroc", title)
    diffs.to_csv(out / "differences.csv", index=False)
    (out / "paired.md").write_text(f"# {title}\n\n" + runs_markdown(frame, diffs, label))


def _interval_row(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    interval = auroc_interval(labels, probs)
    return {"test_auroc": interval.value, "low": interval.low, "high": interval.high}


def _mean_site_auroc(fl: dict) -> float:
    """Mean over sites of the final global model's test AUROC in a federated run."""
    return _mean(m.get(split_key("test", "auroc")) for m in fl["per_site"].values())


def _mean(values: Iterable) -> float:
    vals = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def _mean_sd(mean: float, sd: float) -> str:
    """``mean ± sd`` over seeds; one seed has no spread (``n/a``), not ``± 0.000``."""
    return f"{mean:.3f} ± {'n/a' if pd.isna(sd) else f'{sd:.3f}'}"


def write_results(out: Path, frame: pd.DataFrame, by: list[str], metric: str, title: str) -> None:
    """results.csv (all rows), results.md (mean ± sd over seeds) and results.png (bar chart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    numeric = [c for c in frame.columns if c not in (*by, "seed", "low", "high")
               and pd.api.types.is_numeric_dtype(frame[c])]
    summary = frame.groupby(by, sort=False)[numeric].agg(["mean", "std"])
    lines = [f"# {title}", "", "| " + " | ".join(by + numeric) + " |",
             "|" + "---|" * (len(by) + len(numeric))]
    for key, row in summary.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        cells = [_mean_sd(row[(c, "mean")], row[(c, "std")]) for c in numeric]
        lines.append("| " + " | ".join([str(k) for k in key] + cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(9, 4))
    means = summary[(metric, "mean")]
    errs = summary[(metric, "std")].fillna(0)
    labels = [" / ".join(map(str, k if isinstance(k, tuple) else (k,))) for k in means.index]
    ax.barh(labels, means.to_numpy(), xerr=errs.to_numpy(), color="tab:blue")
    lines = {"oracle_auroc": ("--", "true probability (mean over tasks)"),
             "reachable_auroc": (":", "reachable ceiling (mean over tasks)")}
    for column, (style, label) in lines.items():
        if column in frame.columns and frame[column].notna().any():
            ax.axvline(float(frame[column].mean()), color="black", linestyle=style, label=label)
            ax.legend(fontsize=8)
    ax.set_xlabel(metric)
    ax.set_xlim(0.0, 1.0)  # bars start at 0: lengths compare honestly
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


NO_NOISE = "no-noise"  # privacy-utility: the DP-SGD recipe with the noise left out
# privacy-utility: the default non-DP federation (no recipe: the run a DP recipe gives up)
DEFAULT_FEDERATED = "federated"
FEDERATED_SETTING = "non-DP federated, default run"
PUBLIC_MODEL = "public model alone"  # privacy-utility: the init-from model, not trained further


def privacy_utility(out: Path, data: FederationData, epsilons: Iterable[float | str],
                    seeds: Iterable[int], task: str = "mortality",
                    budget: Budget = Budget(), recipe: dict[str, object] | None = None,
                    units: Iterable[str] = ("patient",)) -> pd.DataFrame:
    """Experiment 4: test AUROC vs per-site epsilon (every site runs DP-SGD), with 95% intervals
    and paired differences against the same recipe without noise (``no-noise``: Poisson sampling,
    clipping, the DP model, no guarantee), without DP (``inf``), the default non-DP federation
    (``federated``: default rounds and settings, no recipe) and, with ``init-from``, the public
    model it starts from, scored as it is; in ``differences.csv``.
    ``recipe``: run-config keys every run gets except ``federated``, e.g. ``init-from`` a
    publicly pre-trained model, ``dp.train``, ``dp.batch-size``. ``units``: privacy units to
    run each epsilon with; with several (``patient stay``) each epsilon is paired across them.
    Each row also has the final model's AUROC on the sites' pooled validation split, on which DP
    hyper-parameters are chosen (never on test)."""
    rows, paired = [], []
    epsilons, seeds, units = list(epsilons), list(seeds), list(units)
    references = (NO_NOISE, "no DP", FEDERATED_SETTING)
    runs = [(eps, unit) for eps in epsilons
            for unit in (units if _dp_setting(eps) not in references else units[:1])]
    splits, labels = _scored_runs(task, data)
    test_set = _test_set_name(splits, labels)
    val = splits.pooled.subset("val")
    public = (recipe or {}).get("init-from")
    progress = StepLog(len(runs) * len(seeds), "privacy-utility")
    for seed in seeds:
        scores: dict[str, np.ndarray] = {}
        for eps, unit in runs:
            setting = _dp_setting(eps)
            if setting not in references and len(units) > 1:
                setting = f"{setting} ({unit})"
            name = f"eps{eps}-{unit}-seed{seed}" if len(units) > 1 else f"eps{eps}-seed{seed}"
            if setting == FEDERATED_SETTING:
                fl = run_federation(out, data, Budget(), {"task": task, "seed": seed}, name,
                                    progress)
            else:
                extra: dict[str, object] = {"task": task, "seed": seed, "dp.unit": unit,
                                            **(recipe or {})}
                if setting != "no DP":
                    extra |= {"dp.enabled": True, "dp.planned-rounds": budget.rounds,
                              "dp.target-epsilon": math.inf if eps == NO_NOISE else float(eps)}
                fl = run_federation(out, data, budget, extra, name, progress)
            model = federated_model(Path(fl["run_dir"]), ModelConfig())
            spent = final_epsilons(Path(fl["run_dir"]))
            rows.append(_scored_row(setting, seed, model, splits.test, val, labels, scores)
                        | {"test_set": test_set, "target_epsilon": eps,
                           "max_site_epsilon_spent": max(spent.values(), default=math.nan),
                           "seconds": fl["seconds"]})
        if public:
            rows.append(_scored_row(PUBLIC_MODEL, seed, public_model(Path(str(public))),
                                    splits.test, val, labels, scores)
                        | {"test_set": test_set, "target_epsilon": math.nan})
        paired += _paired_rows(labels, scores, _reference_pairs(scores), seed)
        paired += _paired_rows(labels, scores, _unit_pairs(scores, units), seed)
    frame = pd.DataFrame(rows).drop(columns=["target_epsilon"])
    _write_runs(out, frame, pd.DataFrame(paired), "setting",
                f"Privacy-utility ({task}): test AUROC per target epsilon; recipe: "
                f"{recipe or 'defaults'}")
    return frame


def _scored_row(setting: str, seed: int, model: MoEHealth, test: SiteData, val: SiteData,
                labels: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, object]:
    """A run's test AUROC with its interval and its pooled-validation AUROC; its test
    probabilities go into ``scores`` for the paired differences."""
    scores[setting] = _test_probs(model, test)
    on_val = predict(model, val, resolve_device())
    return {"setting": setting, "seed": seed, **_interval_row(labels, scores[setting]),
            "val_auroc": RankedScores(on_val.labels, on_val.probs).auroc()}


def public_model(path: Path) -> MoEHealth:
    """The model a run starts from with ``init-from`` (a checkpoint file or a run folder)."""
    model = build_model(ModelConfig())
    load_arrays(model, RunDirectory.load_model(path, model_to_arrays(model)))
    return model


def _reference_pairs(scores: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """Each DP run against what it gives up (the default federation, no DP, its recipe without
    noise) and what it must beat (the public model it started from); the recipe without noise
    against the same references."""
    references = (FEDERATED_SETTING, "no DP", NO_NOISE, PUBLIC_MODEL)
    dp = [s for s in scores if s not in references]
    firsts = {FEDERATED_SETTING: [*dp, NO_NOISE], "no DP": [*dp, NO_NOISE], NO_NOISE: dp,
              PUBLIC_MODEL: [*dp, NO_NOISE]}
    return [(first, ref) for ref in references if ref in scores
            for first in firsts[ref] if first in scores]


def _unit_pairs(scores: dict[str, np.ndarray], units: list[str]) -> list[tuple[str, str]]:
    """``epsilon 8 (patient)`` against ``epsilon 8 (stay)``, and so on, where both ran."""
    if len(units) < 2:
        return []
    first, *others = units
    return [(s, s.replace(f"({first})", f"({other})")) for s in scores if s.endswith(f"({first})")
            for other in others if s.replace(f"({first})", f"({other})") in scores]


def _dp_setting(eps: float | str) -> str:
    if eps == NO_NOISE:
        return NO_NOISE
    if eps == DEFAULT_FEDERATED:
        return FEDERATED_SETTING
    return f"epsilon {eps:g}" if math.isfinite(float(eps)) else "no DP"


def final_epsilons(run_dir: Path) -> dict[str, float]:
    """Each DP site's epsilon after the last round of its ledger (empty without DP)."""
    path = run_dir / "privacy_ledger.jsonl"
    if not path.is_file():
        return {}
    rows = read_ledger(path)
    return {r["site"]: float(r["epsilon"]) for r in sorted(rows, key=lambda r: r["round"])}


def federated_ablations(out: Path, data: FederationData, seeds: Iterable[int],
                        task: str = "mortality", budget: Budget = Budget(),
                        variants: Iterable[str] = FEDERATED_ABLATIONS) -> pd.DataFrame:
    """Experiment 2: the paper's ablations (or ``variants``), trained federatedly; each scored
    with its interval on test and on the sites' pooled validation split. ``selection.csv`` ranks
    the mixture-of-experts variants by their mean validation AUROC over seeds: how the default
    configuration is chosen, never on test. ``differences.csv`` pairs the first variant and the
    chosen one against every other, and the dense gate against the uniform gate and MLP fusion."""
    variants = check_variants(variants)
    if len(set(variants)) != len(variants) or len(variants) < 2:
        raise MoeHealthInputError(f"ablations: give at least two different variants, got "
                                  f"{variants}")
    rows, scores = [], {}
    seeds = list(seeds)
    splits, labels = _scored_runs(task, data)
    test_set = _test_set_name(splits, labels)
    val = splits.pooled.subset("val")
    progress = StepLog(len(variants) * len(seeds), "ablations")
    for seed in seeds:
        for name in variants:
            fl = run_federation(out, data, budget,
                                {"task": task, "seed": seed, **VARIANTS[name].run_config()},
                                f"{name}-seed{seed}", progress)
            model = federated_model(Path(fl["run_dir"]), variant_model_config(name))
            scores[seed, name] = _test_probs(model, splits.test)
            on_val = predict(model, val, resolve_device())
            rows.append({"variant": name, "seed": seed, "test_set": test_set,
                         **_interval_row(labels, scores[seed, name]),
                         "val_auroc": RankedScores(on_val.labels, on_val.probs).auroc(),
                         "mean_site_test_auroc": _mean_site_auroc(fl), "seconds": fl["seconds"]})
    frame = pd.DataFrame(rows)
    selection = variant_selection(frame)
    chosen = selection.variant[selection.chosen].tolist()
    pairs = list(dict.fromkeys(
        [(variants[0], n) for n in variants[1:]]
        + [(c, n) for c in chosen if c != variants[0] for n in variants if n != c]
        + [p for p in DENSE_GATE_PAIRS if set(p) <= set(variants)]))
    paired = [row for seed in seeds for row in _paired_rows(
        labels, {n: scores[seed, n] for n in variants}, pairs, seed)]
    _write_runs(out, frame, pd.DataFrame(paired), "variant",
                f"Federated ablations ({task}): test AUROC")
    if not selection.empty:
        _write_selection(out, selection, variant_selection_markdown)
    return frame


def _write_selection(out: Path, selection: pd.DataFrame,
                     markdown: Callable[[pd.DataFrame], str]) -> None:
    """``selection.csv`` (what a run chose on validation) and its table under ``paired.md``."""
    selection.to_csv(out / "selection.csv", index=False)
    with open(out / "paired.md", "a") as fh:
        fh.write("\n" + markdown(selection))


def variant_selection(frame: pd.DataFrame) -> pd.DataFrame:
    """The mixture-of-experts variants of ``frame`` by mean pooled-validation AUROC over seeds,
    best first; ``chosen`` marks the best (empty when no such variant ran)."""
    moe = frame[frame.variant.map(is_moe)]
    table = (moe.groupby("variant", sort=False).val_auroc.agg(["mean", list]).reset_index()
             .rename(columns={"mean": "val_auroc", "list": "per_seed"})
             .sort_values("val_auroc", ascending=False, kind="stable"))
    table["per_seed"] = table.per_seed.map(lambda v: " / ".join(f"{x:.4f}" for x in v))
    table["chosen"] = [i == 0 for i in range(len(table))]
    return table.reset_index(drop=True)


def variant_selection_markdown(selection: pd.DataFrame) -> str:
    """The candidate configurations with their validation AUROC; the best is the default."""
    lines = ["Configuration chosen on the sites' pooled validation split (mean over seeds; "
             "never on test):", "", "| variant | validation AUROC per seed | mean | chosen |",
             "|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.per_seed} | {r.val_auroc:.4f} | {'yes' if r.chosen else ''} |"
              for r in selection.itertuples()]
    return "\n".join(lines) + "\n"


# is a dense learned gate better than fixed uniform weights, or than no experts at all?
DENSE_GATE_PAIRS = [("dense-gate", "static-gate"), ("dense-gate", "mlp-fusion")]


def _test_set_name(splits: BenchmarkSplits, labels: np.ndarray) -> str:
    return _named_test_set(splits.test_name, labels)


def _named_test_set(name: str, labels: np.ndarray) -> str:
    return f"{name} (n {len(labels)}, positives {int(labels.sum())})"


def skew_profile(out: Path, num_sites: int, k: int) -> Path:
    """A site profile where the first ``k`` sites lack chest X-rays and the last ``k`` notes."""
    import yaml

    profile = out / "profiles" / f"missing-{k}.yaml"
    profile.parent.mkdir(parents=True, exist_ok=True)
    sites: dict[str, dict[str, list[str]]] = {}
    for i in range(k):
        sites.setdefault(f"site-{i}", {"drop_modalities": []})["drop_modalities"].append("cxr")
        last = f"site-{num_sites - 1 - i}"
        sites.setdefault(last, {"drop_modalities": []})["drop_modalities"].append("notes")
    profile.write_text(yaml.safe_dump({"sites": sites}))
    return profile


def heterogeneity(out: Path, data: FederationData, missing_counts: Iterable[int],
                  seeds: Iterable[int], task: str = "mortality", budget: Budget = Budget(),
                  aggregations: Iterable[str] = ("modality-aware", "fedavg-all"),
                  server_lrs: Iterable[float] = (0.003, 0.01, 0.03)) -> pd.DataFrame:
    """Experiment 3: k sites lack chest X-rays (the first k) and k lack notes (the last k); each
    aggregation in ``aggregations`` per seed, paired against plain FedAvg (``fedavg-all``) and
    modality-aware against its FedAdam variant. A FedAdam variant's server-lr is chosen among
    ``server_lrs`` by the AUROC on the skewed sites' pooled validation split with the first seed
    (never on test; the candidates go to ``selection.csv``). Every run is scored on the test set
    of the unmodified federation (the independent test population of the benchmark preset), so
    all stays keep their modalities there."""
    rows, paired, selection = [], [], []
    missing_counts, seeds, aggregations = list(missing_counts), list(seeds), list(aggregations)
    server_lrs = list(server_lrs)
    for aggregation in aggregations:
        aggregation_run_config(aggregation, 0.0)  # an unknown name fails before any run
    tuned = [a for a in aggregations if "+" in a]
    if tuned and (not server_lrs or not all(lr > 0 for lr in server_lrs)):
        raise MoeHealthInputError(f"heterogeneity: {tuned[0]} needs positive server learning "
                                  f"rates to choose from (--server-lrs), got {server_lrs}")
    candidates = len(tuned) * (len(server_lrs) - 1)
    progress = StepLog(len(missing_counts) * (len(aggregations) * len(seeds) + candidates),
                       "heterogeneity")
    splits, labels = _scored_runs(task, data)  # the test set does not depend on the profile
    test_set = _test_set_name(splits, labels)
    for k in missing_counts:
        profile = skew_profile(out, data.num_sites, k)
        variant = dataclasses.replace(data, profile=profile)
        setting = f"{k} sites w/o CXR, {k} w/o notes"
        val = benchmark_splits(variant, task).pooled.subset("val")  # what the skewed sites have

        def run(aggregation: str, seed: int, server_lr: float | None = None,
                variant: FederationData = variant, k: int = k) -> tuple[dict, MoEHealth]:
            suffix = f"-lr{server_lr:g}" if server_lr is not None else ""
            fl = run_federation(out, variant, budget,
                                {"task": task, "seed": seed, "data.profile": str(variant.profile),
                                 **aggregation_run_config(aggregation, server_lr)},
                                f"k{k}-{aggregation}{suffix}-seed{seed}", progress)
            return fl, federated_model(Path(fl["run_dir"]), ModelConfig())

        chosen: dict[str, tuple[float, tuple[dict, MoEHealth]]] = {}
        for aggregation in tuned:  # server-lr on validation, first seed
            best = None
            for server_lr in server_lrs:
                fl, model = run(aggregation, seeds[0], server_lr)
                on_val = predict(model, val, resolve_device())
                auroc = RankedScores(on_val.labels, on_val.probs).auroc()
                selection.append({"setting": setting, "aggregation": aggregation,
                                  "seed": seeds[0], "server_lr": server_lr, "val_auroc": auroc})
                if best is None or auroc > best[0]:
                    best = (auroc, server_lr, (fl, model))
            assert best is not None  # server_lrs is not empty (checked above)
            chosen[aggregation] = (best[1], best[2])
            for r in selection[-len(server_lrs):]:
                r["chosen"] = r["server_lr"] == best[1]
        for seed in seeds:
            scores = {}
            for aggregation in aggregations:
                server_lr = chosen[aggregation][0] if aggregation in chosen else None
                fl, model = (chosen[aggregation][1] if aggregation in chosen and seed == seeds[0]
                             else run(aggregation, seed, server_lr))
                scores[aggregation] = _test_probs(model, splits.test)
                name = aggregation + (f" (server-lr {server_lr:g})" if server_lr else "")
                rows.append({"run": f"{setting}, {name}", "setting": setting,
                             "aggregation": aggregation, "server_lr": server_lr, "seed": seed,
                             "test_set": test_set, **_interval_row(labels, scores[aggregation]),
                             "mean_site_test_auroc": _mean_site_auroc(fl),
                             "mean_bytes_per_site_round": fl["mean_bytes_per_site_round"],
                             "seconds": fl["seconds"]})
            pairs = [(a, "fedavg-all") for a in aggregations if a != "fedavg-all"
                     and "fedavg-all" in aggregations]
            pairs += [(a, a.partition("+")[0]) for a in tuned if a.partition("+")[0] in aggregations]
            paired += _paired_rows(labels, scores, pairs, seed, f"{setting}: ")
    frame = pd.DataFrame(rows)
    _write_runs(out, frame.drop(columns=["setting", "aggregation"]), pd.DataFrame(paired), "run",
                f"Modality heterogeneity ({task}): test AUROC")
    if selection:
        _write_selection(out, pd.DataFrame(selection), selection_markdown)
    return frame


def selection_markdown(selection: pd.DataFrame) -> str:
    """The server-lr candidates of each FedAdam variant with their validation AUROC."""
    lines = ["Server-lr chosen on the skewed sites' pooled validation split (first seed; never "
             "on test):", "", "| setting | aggregation | server-lr | validation AUROC | chosen |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.setting} | {r.aggregation} | {r.server_lr:g} | {r.val_auroc:.4f} | "
              f"{'yes' if r.chosen else ''} |" for r in selection.itertuples()]
    return "\n".join(lines) + "\n"


def personalization(out: Path, data: FederationData, seeds: Iterable[int],
                    task: str = "mortality", budget: Budget = Budget(),
                    config: FineTuneConfig | None = None, site_local: str = "") -> pd.DataFrame:
    """Each site fine-tunes the federation's final global model on its own data
    (client/rounds/personalize.py, ``config`` fixed in advance); the global model and each
    personalized one are scored on the site's own test split (internal) and on the federation's
    test set (external: the independent test population of the benchmark presets), each
    personalized model paired with the global one on the same stays. With ``site_local`` (a
    ``site-local-groups`` value, e.g. "gate"), a second federation per seed in which each site
    keeps those groups to itself (client/rounds/site_local.py); each site's own model (its global
    model with its local groups) is scored and paired the same way."""
    config = config or FineTuneConfig()
    local_groups = site_local_groups(site_local)
    rows, paired = [], []
    seeds = list(seeds)
    splits, labels = _scored_runs(task, data)
    population = _test_set_name(splits, labels)
    sites = _sites(data, task)
    device = resolve_device()
    progress = StepLog(len(seeds) * (1 + len(sites) + bool(local_groups)), "personalization")

    def row(run: str, seed: int, test_set: str, y: np.ndarray, probs: np.ndarray,
            **extra: object) -> None:
        rows.append({"run": run, "seed": seed, "test_set": test_set, **_interval_row(y, probs),
                     **extra})

    def score_site(seed: int, name: str, global_model: MoEHealth, own_model: MoEHealth,
                   kind: str, global_scores: np.ndarray, global_row: bool = False,
                   **extra: object) -> None:
        """``own_model`` of site ``name`` against the global model: on the site's test split
        and on the test population; ``global_row``: also the global model's own-split row."""
        own = sites[name].subset("test")
        own_global, own_tuned = (predict(global_model, own, device),
                                 predict(own_model, own, device))
        own_set = _named_test_set(f"{name}'s test split", own_global.labels)
        if not classes_large_enough(own_global.labels, MIN_CELL_SIZE):
            log.warning("%s: fewer than %d positives or negatives in its test split: no "
                        "internal AUROC (the site would not release one)", name, MIN_CELL_SIZE)
        else:
            if global_row:
                row(f"global model, {name}'s test split", seed, own_set, own_global.labels,
                    own_global.probs)
            row(f"{name} {kind}, {name}'s test split", seed, own_set, own_tuned.labels,
                own_tuned.probs, **extra)
            paired.extend(_paired_rows(own_global.labels, {kind: own_tuned.probs,
                                                           "global": own_global.probs},
                                       [(kind, "global")], seed, f"{name}, its test split: "))
        scores = _test_probs(own_model, splits.test)
        row(f"{name} {kind}, test population", seed, population, labels, scores, **extra)
        paired.extend(_paired_rows(labels, {kind: scores, "global": global_scores},
                                   [(kind, "global")], seed, f"{name}, test population: "))

    for seed in seeds:
        fl = run_federation(out, data, budget, {"task": task, "seed": seed}, f"seed{seed}",
                            progress)
        global_model = federated_model(Path(fl["run_dir"]), ModelConfig()).to(device)
        global_scores = _test_probs(global_model, splits.test)
        row("global model, test population", seed, population, labels, global_scores,
            mean_bytes_per_site_round=fl["mean_bytes_per_site_round"])
        for name, site in sites.items():
            step = f"seed{seed} {name} fine-tuning"
            progress.start(step)
            started = time.perf_counter()
            tuned = fine_tune(site, global_model, dataclasses.replace(config, seed=seed), device)
            progress.finish(step, time.perf_counter() - started)
            score_site(seed, name, global_model, tuned.model, "personalized", global_scores,
                       global_row=True, chosen_epoch=tuned.chosen_epoch)
        if local_groups:
            local = run_federation(out, data, budget, {"task": task, "seed": seed,
                                                       SITE_LOCAL_GROUPS: site_local},
                                   f"seed{seed}-site-local", progress)
            for name, model in site_local_models(Path(local["run_dir"]), local["run_id"],
                                                 local_groups).items():
                score_site(seed, name, global_model, model.to(device),
                           f"site-local {'+'.join(local_groups)}", global_scores,
                           mean_bytes_per_site_round=local["mean_bytes_per_site_round"])
    frame = pd.DataFrame(rows)
    _write_runs(out, frame, pd.DataFrame(paired), "run",
                f"Personalization ({task}): fine-tuning the global model at each site "
                f"({config.parts}, up to {config.max_epochs} epochs, lr {config.lr:g})"
                + (f"; a federation in which each site keeps its own {site_local}"
                   if local_groups else ""))
    return frame
