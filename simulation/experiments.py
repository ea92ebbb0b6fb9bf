"""Experiment drivers: federated vs pooled vs local-only, ablations, modality heterogeneity and
privacy-utility. Each writes ``results.csv``, ``results.md`` and a PNG into its output folder.

Federated runs go through a private simulation SuperLink (the real `flwr run` path); pooled and
local-only baselines train the same model on the same sites' data with the same epoch budget
(pre-training epochs = pre-training rounds, joint epochs = joint rounds x local epochs).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.data.dataset import SiteData, concat_sites
from client.rounds.evaluation import evaluate_predictions
from client.rounds.training import TrainConfig, predict, resolve_device
from server.settings import FederationSettings
from shared_model import ModelConfig
from shared_model.protocol import pooled_key, split_key
from simulation.baselines import FEDERATED_ABLATIONS, VARIANTS
from simulation.centralized import train_centralized
from simulation.local_superlink import local_simulation
from simulation.oracle import REACHABLE, oracle_auroc
from simulation.prepare import FederationData, prepare_sites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Rounds of the federation; the baselines get the same number of epochs."""

    rounds: int = FederationSettings.num_rounds
    pretrain_rounds: int = FederationSettings.pretrain_rounds
    local_epochs: int = FederationSettings.local_epochs
    lr: float = FederationSettings.lr

    def run_config(self) -> dict[str, object]:
        return {"num-server-rounds": self.rounds, "pretrain-rounds": self.pretrain_rounds,
                "local-epochs": self.local_epochs, "lr": self.lr}

    def train_config(self, task: str, seed: int) -> TrainConfig:
        joint = (self.rounds - self.pretrain_rounds) * self.local_epochs
        return TrainConfig(task=task, lr=self.lr, max_epochs=joint, patience=joint + 1,
                           pretrain_epochs=self.pretrain_rounds * self.local_epochs, seed=seed)


class Progress:
    """One line per step of a long experiment, on stderr: ``[3/12] name: done in 41 s (elapsed
    2m 03s, about 6m 09s left)``."""

    def __init__(self, total: int, experiment: str) -> None:
        self.total, self.experiment, self.done = max(total, 1), experiment, 0
        self.started = time.perf_counter()

    def start(self, name: str) -> None:
        print(f"[{self.done + 1}/{self.total}] {self.experiment}: {name} ...", file=sys.stderr,
              flush=True)

    def finish(self, name: str, seconds: float) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        print(f"[{self.done}/{self.total}] {self.experiment}: {name} done in {seconds:.0f} s "
              f"(elapsed {_minutes(elapsed)}, about {_minutes(left)} left)", file=sys.stderr,
              flush=True)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


def run_federation(workdir: Path, data: FederationData, budget: Budget, extra: dict[str, object],
                   name: str, progress: Progress | None = None) -> dict:
    """One `flwr run` of the app; returns final pooled and per-site test metrics and timings."""
    if progress:
        progress.start(name)
    run_dir = workdir / "runs" / name
    config = {**budget.run_config(), "data.num-sites": data.num_sites,
              "data.patients": data.patients, "data.seed": data.seed, "data.scheme": data.scheme,
              "data.dir": str(data.data_dir), "run-dir": str(run_dir), **extra}
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
    return {"seconds": outcome.seconds, "run_dir": str(run_dir), "per_site": per_site,
            "pooled_auroc": next((r[pooled_key("auroc")] for r in reversed(rounds)
                                  if r["kind"] == "centralized-eval"), math.nan),
            "mean_bytes_per_site_round":
            float(np.mean(bytes_in)) if bytes_in else math.nan}


def _sites(data: FederationData, task: str) -> dict[str, SiteData]:
    return {s: SiteData.load(d, task, s) for s, d in prepare_sites(data).items()}


def _auroc(model, data: SiteData) -> float:
    return float(evaluate_predictions(predict(model, data.subset("test"), resolve_device()))["auroc"])


def fl_vs_central(out: Path, data: FederationData, tasks: Iterable[str], seeds: Iterable[int],
                  budget: Budget = Budget()) -> pd.DataFrame:
    """Experiment 1: federated vs pooled (centralized) vs local-only, per task and seed."""
    rows = []
    tasks, seeds = list(tasks), list(seeds)
    progress = Progress(len(tasks) * len(seeds), "fl-vs-central")
    for task in tasks:
        sites = _sites(data, task)
        pooled = concat_sites(list(sites.values()))
        test_mask = pooled.split == "test"
        oracle = oracle_auroc(data.oracle_csv(), pooled.stay_id[test_mask],
                              pooled.labels.numpy()[test_mask], task)
        reachable = oracle_auroc(data.oracle_csv(), pooled.stay_id[test_mask],
                                 pooled.labels.numpy()[test_mask], task, REACHABLE)
        ceilings = {"reachable_auroc": reachable, "oracle_auroc": oracle}
        for seed in seeds:
            fl = run_federation(out, data, budget, {"task": task, "seed": seed}, f"{task}-seed{seed}",
                                progress)
            rows.append({"task": task, "seed": seed, "setting": "federated",
                         "pooled_test_auroc": fl["pooled_auroc"],
                         "mean_site_test_auroc": _mean_site_auroc(fl),
                         "seconds": fl["seconds"], **ceilings})
            started = time.perf_counter()
            central = train_centralized(pooled, ModelConfig(), budget.train_config(task, seed))
            per_site = [_auroc(central.model, s) for s in sites.values()]
            rows.append({"task": task, "seed": seed, "setting": "pooled (centralized)",
                         "pooled_test_auroc": central.test["auroc"],
                         "mean_site_test_auroc": _mean(per_site),
                         "seconds": time.perf_counter() - started, **ceilings})
            started = time.perf_counter()
            local_own, local_pooled = [], []
            for site in sites.values():
                local = train_centralized(site, ModelConfig(), budget.train_config(task, seed))
                local_own.append(local.test["auroc"])
                local_pooled.append(_auroc(local.model, pooled))
            rows.append({"task": task, "seed": seed, "setting": "local-only (mean over sites)",
                         "pooled_test_auroc": _mean(local_pooled),
                         "mean_site_test_auroc": _mean(local_own),
                         "seconds": time.perf_counter() - started, **ceilings})
            log.info("%s seed %d done", task, seed)
    frame = pd.DataFrame(rows)
    frame["fraction_of_reachable"] = frame["pooled_test_auroc"] / frame["reachable_auroc"]
    write_results(out, frame, ["task", "setting"], "pooled_test_auroc",
                  "Federated vs pooled vs local-only (pooled test AUROC)")
    return frame


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
    numeric = [c for c in frame.columns if c not in by and c != "seed"
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


def privacy_utility(out: Path, data: FederationData, epsilons: Iterable[float],
                    seeds: Iterable[int], task: str = "mortality",
                    budget: Budget = Budget()) -> pd.DataFrame:
    """Experiment 4: AUROC vs per-site epsilon (every site runs DP-SGD; inf = no DP)."""
    rows = []
    epsilons, seeds = list(epsilons), list(seeds)
    progress = Progress(len(epsilons) * len(seeds), "privacy-utility")
    for eps in epsilons:
        for seed in seeds:
            extra: dict[str, object] = {"task": task, "seed": seed}
            if math.isfinite(eps):
                extra |= {"dp.enabled": True, "dp.target-epsilon": float(eps),
                          "dp.planned-rounds": budget.rounds}
            fl = run_federation(out, data, budget, extra, f"eps{eps}-seed{seed}", progress)
            spent = _final_epsilons(Path(fl["run_dir"]))
            rows.append({"target_epsilon": eps, "seed": seed, "pooled_test_auroc": fl["pooled_auroc"],
                         "mean_site_test_auroc": _mean_site_auroc(fl),
                         "max_site_epsilon_spent": max(spent.values(), default=0.0),
                         "seconds": fl["seconds"]})
    frame = pd.DataFrame(rows)
    frame["setting"] = [f"epsilon {e:g}" if math.isfinite(e) else "no DP" for e in frame.target_epsilon]
    write_results(out, frame.drop(columns=["target_epsilon"]), ["setting"], "pooled_test_auroc",
                  f"Privacy-utility ({task}): pooled test AUROC per target epsilon")
    return frame


def _final_epsilons(run_dir: Path) -> dict[str, float]:
    path = run_dir / "privacy_ledger.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return {r["site"]: float(r["epsilon"]) for r in sorted(rows, key=lambda r: r["round"])}


def federated_ablations(out: Path, data: FederationData, seeds: Iterable[int],
                        task: str = "mortality", budget: Budget = Budget()) -> pd.DataFrame:
    """Experiment 2: the paper's ablations, trained federatedly."""
    rows = []
    seeds = list(seeds)
    progress = Progress(len(FEDERATED_ABLATIONS) * len(seeds), "ablations")
    for name in FEDERATED_ABLATIONS:
        for seed in seeds:
            fl = run_federation(out, data, budget,
                                {"task": task, "seed": seed, **VARIANTS[name].run_config()},
                                f"{name}-seed{seed}", progress)
            rows.append({"variant": name, "seed": seed, "pooled_test_auroc": fl["pooled_auroc"],
                         "mean_site_test_auroc": _mean_site_auroc(fl),
                         "seconds": fl["seconds"]})
    frame = pd.DataFrame(rows)
    write_results(out, frame, ["variant"], "pooled_test_auroc",
                  f"Federated ablations ({task}): pooled test AUROC")
    return frame


def heterogeneity(out: Path, data: FederationData, missing_counts: Iterable[int],
                  seeds: Iterable[int], task: str = "mortality",
                  budget: Budget = Budget()) -> pd.DataFrame:
    """Experiment 3: k sites lack chest X-rays (the first k) and k lack notes (the last k);
    modality-aware aggregation vs plain FedAvg over all parameters."""
    import dataclasses

    import yaml

    rows = []
    missing_counts, seeds = list(missing_counts), list(seeds)
    progress = Progress(len(missing_counts) * 2 * len(seeds), "heterogeneity")
    for k in missing_counts:
        profile = out / "profiles" / f"missing-{k}.yaml"
        profile.parent.mkdir(parents=True, exist_ok=True)
        sites: dict[str, dict[str, list[str]]] = {}
        for i in range(k):
            sites.setdefault(f"site-{i}", {"drop_modalities": []})["drop_modalities"].append("cxr")
            last = f"site-{data.num_sites - 1 - i}"
            sites.setdefault(last, {"drop_modalities": []})["drop_modalities"].append("notes")
        profile.write_text(yaml.safe_dump({"sites": sites}))
        variant = dataclasses.replace(data, profile=profile)
        for rule in ("modality-aware", "fedavg-all"):
            for seed in seeds:
                fl = run_federation(out, variant, budget,
                                    {"task": task, "seed": seed, "aggregation-rule": rule,
                                     "data.profile": str(profile)}, f"k{k}-{rule}-seed{seed}",
                                    progress)
                rows.append({"sites_missing_each": k, "aggregation": rule, "seed": seed,
                             "pooled_test_auroc": fl["pooled_auroc"],
                             "mean_site_test_auroc": _mean_site_auroc(fl),
                             "mean_bytes_per_site_round": fl["mean_bytes_per_site_round"],
                             "seconds": fl["seconds"]})
    frame = pd.DataFrame(rows)
    frame["setting"] = [f"{k} sites w/o CXR, {k} w/o notes" for k in frame.sites_missing_each]
    write_results(out, frame.drop(columns=["sites_missing_each"]), ["setting", "aggregation"],
                  "pooled_test_auroc", f"Modality heterogeneity ({task}): pooled test AUROC")
    return frame
