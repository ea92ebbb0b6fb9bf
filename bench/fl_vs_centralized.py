"""Federated vs centralized wall time for the same epochs, with where the federated time goes.

In one run on this machine, on the benchmark preset (cached after its first build):
- centralized training of MoE-Health on the pooled train split of the sites, for the epochs the
  federation runs (``--pretrain-rounds`` expert pre-training epochs, then the joint ones), with its
  validation after every epoch (early stopping) and the final test evaluation;
- the same model, data and epochs federated with ``flwr run`` (5 simulated sites, 1 local epoch
  per round), twice: evaluating only after the last round (``evaluate-every`` = rounds) and after
  every round (the default), the pooled evaluation on the independent test population included.

    python bench/fl_vs_centralized.py --rounds 4 --pretrain-rounds 1

A site's evaluation counts as evaluation whether it came in an evaluate message (data loading
included) or rode in the next round's train message (the evaluation step alone).

FL time after start-up runs from the moment round 1's messages are out and the simulation's
ClientApp worker has loaded the app, to the last record of the run. The breakdown comes from the
run's rounds.jsonl (phase seconds, aggregation, pooled evaluation) and the sites' own
message-timing.jsonl lines (data loading, training, evaluation, reply per message).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.record import BenchTable, add_store_arg  # noqa: E402
from client.data.dataset import SiteData, concat_sites  # noqa: E402
from client.message_timing import TIMING_FILE  # noqa: E402
from shared_model.config import model_config_from_run_config  # noqa: E402
from shared_model.run_config import pyproject_defaults  # noqa: E402
from simulation.centralized import train_centralized  # noqa: E402
from simulation.experiments import Budget  # noqa: E402
from simulation.local_superlink import local_simulation  # noqa: E402
from simulation.prepare import (  # noqa: E402
    TEST_POPULATION_SITE,
    FederationData,
    prepare_sites,
    prepare_test_population,
)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def federated(workdir: Path, data: FederationData, config: dict, name: str) -> dict[str, float]:
    """One `flwr run`; its timeline in seconds."""
    run_dir = workdir / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time the benchmark runs
    started = time.time()
    with local_simulation(workdir / "flwr" / name) as sim:
        outcome = sim.run({**config, "run-dir": str(run_dir)}, num_supernodes=data.num_sites,
                          timeout=3600)
    ended = time.time()
    if not outcome.ok:
        raise SystemExit(f"federated run {name} failed ({outcome.status}):\n{outcome.log[-3000:]}")
    rounds = _jsonl(run_dir / "rounds.jsonl")
    messages = [m for site in sorted(data.sites_dir().iterdir())
                for m in _jsonl(site / TIMING_FILE) if m["time"] >= started]
    first = next(r for r in rounds if r["kind"] == "train")
    process_start = min(m["time"] - m["start_to_handler_s"] - _handler_s(m) for m in messages)
    app_loaded = process_start + min(m["start_to_app_loaded_s"] for m in messages)
    window_start = max(first["seconds"]["sent_at"], app_loaded)
    last = max(r["time"] for r in rounds)
    # an evaluation that rode in the next round's train messages has no phase of its own
    phase = {kind: sum(r["seconds"].get("sites", 0.0) for r in rounds if r["kind"] == kind)
             for kind in ("train", "evaluate")}
    handled = sum(_handler_s(m) for m in messages)
    evaluating = sum(m.get("evaluate_s", 0.0) + (m["data_s"] if m["kind"] == "evaluate" else 0.0)
                     for m in messages)
    site = {"train": handled - evaluating, "evaluate": evaluating}
    worker_start = max(app_loaded - first["seconds"]["sent_at"], 0.0)
    parts = {
        "flower_startup": (run_dir / "config.json").stat().st_mtime - started,
        "simulation_setup": first["seconds"]["sent_at"] - (run_dir / "config.json").stat().st_mtime,
        "clientapp_worker_start": worker_start,
        "site_training": site["train"],
        "site_evaluation": site["evaluate"],
        "messaging": phase["train"] + phase["evaluate"] - site["train"] - site["evaluate"]
        - worker_start,
        "aggregation": sum(r["seconds"].get("aggregate", 0.0) for r in rounds if r["kind"] == "train"),
        "pooled_evaluation": sum(r["seconds"] for r in rounds if r["kind"] == "centralized-eval"),
        "after_last_record": ended - last,
    }
    accounted = sum(v for k, v in parts.items()
                    if k not in ("flower_startup", "simulation_setup", "after_last_record"))
    parts["between_phases"] = (last - first["seconds"]["sent_at"]) - accounted
    pooled = [r for r in rounds if r["kind"] == "centralized-eval"]
    return {"total": ended - started, "after_startup": last - window_start, **parts,
            "pooled_auroc": pooled[-1]["pooled.auroc"] if pooled else float("nan")}


def _handler_s(message: dict) -> float:
    return sum(v for k, v in message.items() if k.endswith("_s") and not k.startswith("start_to"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/moehealth-fl-vs-central"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pretrain-rounds", type=int, default=1)
    parser.add_argument("--task", default="mortality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="benchmark")
    add_store_arg(parser)
    args = parser.parse_args()
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    run_config = {**pyproject_defaults(), "data.preset": args.preset, "task": args.task,
                  "seed": args.seed}
    data = FederationData.from_run_config(run_config)
    sites = prepare_sites(data)
    population = prepare_test_population(data)
    budget = Budget(rounds=args.rounds, pretrain_rounds=args.pretrain_rounds, local_epochs=1,
                    lr=float(run_config["lr"]))
    pooled = concat_sites([SiteData.load(d, args.task, s) for s, d in sites.items()])
    test = SiteData.load(population, args.task, TEST_POPULATION_SITE) if population else None
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; command: python "
          f"bench/fl_vs_centralized.py {' '.join(sys.argv[1:])}", flush=True)
    print(f"data: preset {args.preset}, {data.num_sites} sites, {pooled.size('train')} training "
          f"stays, {args.rounds} rounds ({args.pretrain_rounds} expert pre-training), 1 local epoch, "
          f"batch {run_config['batch-size']}", flush=True)

    central = train_centralized(pooled, model_config_from_run_config(run_config),
                                budget.train_config(args.task, args.seed), test_data=test)
    print(f"centralized: {central.seconds:.1f} s "
          + ", ".join(f"{k} {v:.1f} s" for k, v in central.timings.items())
          + f"; test AUROC {central.test['auroc']:.3f}", flush=True)

    fl_config = {**budget.run_config(), "data.preset": args.preset, "task": args.task,
                 "seed": args.seed}
    rows = {}
    for name, every in (("evaluate after the last round", args.rounds), ("evaluate every round", 1)):
        rows[name] = federated(args.workdir, data, {**fl_config, "evaluate-every": every},
                               f"every-{every}")
        print(f"federated, {name}: " + json.dumps({k: round(v, 2) for k, v in rows[name].items()}),
              flush=True)

    table = BenchTable(["federated run", "total s", "Flower start-up s", "simulation set-up s",
                        "ClientApp worker start s", "**after start-up s**", "site training s",
                        "site evaluation s", "messaging s", "aggregation s",
                        "pooled evaluation s", "between phases s", "centralized s",
                        "**FL after start-up / centralized**",
                        "pooled test AUROC (FL / centralized)"])
    for name, r in rows.items():
        table.add(name, f"{r['total']:.1f}", f"{r['flower_startup']:.1f}",
                  f"{r['simulation_setup']:.1f}", f"{r['clientapp_worker_start']:.1f}",
                  f"**{r['after_startup']:.1f}**", f"{r['site_training']:.1f}",
                  f"{r['site_evaluation']:.1f}", f"{r['messaging']:.1f}", f"{r['aggregation']:.2f}",
                  f"{r['pooled_evaluation']:.1f}", f"{r['between_phases']:.1f}",
                  f"{central.seconds:.1f}", f"**{r['after_startup'] / central.seconds:.2f}x**",
                  f"{r['pooled_auroc']:.3f} / {central.test['auroc']:.3f}")
    epochs_s = central.timings["pretrain"] + central.timings["train"]
    site_training = rows["evaluate after the last round"]["site_training"]
    table.summary(f"{data.num_sites} sites, {pooled.size('train'):,} training stays, "
                  f"{args.rounds} rounds ({args.pretrain_rounds} expert pre-training), 1 local "
                  f"epoch, batch {run_config['batch-size']}. Centralized {central.seconds:.1f} s: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in central.timings.items())
                  + f". Site training / centralized training epochs: "
                  f"{site_training / epochs_s:.2f}x ({site_training:.1f} s / {epochs_s:.1f} s).")
    table.store(args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
