"""Flower ServerApp: set up the run, hand the rounds to the strategy.

``server.app:app`` is the coordinator of a deployment (sites own their data). A simulation also
needs its virtual sites prepared and, optionally, an evaluation on the pooled test split; those
come from a :data:`SimulationHook` that the composition root (``moehealth/serverapp.py``, the app
pyproject.toml registers) passes to :func:`create_server_app`, so server/ never imports
simulation/.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from server.aggregation import FedAdamState
from server.flower_io import from_array_record, to_array_record
from server.identity import SiteIdentity
from server.report import cross_site_table
from server.results import write_results_table
from server.run_dir import RunDirectory
from server.settings import FederationSettings
from server.strategy import ModalityAwareStrategy
from server.tracking import make_tracker
from shared_model import build_model
from shared_model.config import model_config_from_run_config
from shared_model.errors import MoeHealthInputError
from shared_model.params import model_to_arrays
from shared_model.run_config import DATA_PREFIX, SIMULATION, pyproject_defaults

log = logging.getLogger(__name__)
RESUME_FROM, RUN_DIR = "resume-from", "run-dir"
PooledEvaluate = Callable[[dict[str, np.ndarray]], dict[str, float | list[float]]]


@dataclass(frozen=True)
class SimulatedSites:
    """What a simulation environment hands the server: where the ClientApps find their site
    (the sites manifest) and, optionally, an evaluation of the global model on pooled test data."""

    sites_manifest: str
    pooled_evaluate: PooledEvaluate | None = None


def _check_supernodes(grid: Grid, expected: int, wait_s: float = 10.0) -> None:
    """Stop before round 1 when the simulation has another number of SuperNodes than sites."""
    deadline = time.monotonic() + wait_s
    found = len(list(grid.get_node_ids()))
    while found < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        found = len(list(grid.get_node_ids()))
    if found != expected:
        raise MoeHealthInputError(
            f"the simulation has {found} SuperNodes but data.num-sites = {expected}: run with "
            f"--federation-config 'num-supernodes={expected}' or set -c 'data.num-sites={found}'")


SimulationHook = Callable[[dict[str, Any], Path, int], SimulatedSites]  # run config, dir, start


def _open_run(settings: FederationSettings, run_config: dict):
    """A new run (round 0, fresh model) or the resumed one from its last checkpoint."""
    optimizer = FedAdamState(lr=settings.server_lr) if settings.server_optimizer == "fedadam" else None
    if settings.resume_from:
        run = RunDirectory(settings.resume_from)
        start, arrays, opt_state, _ = run.load_latest()
        run.truncate_after(start)
        if optimizer is not None:
            optimizer.load_state_arrays(opt_state)
        return run, start, arrays, optimizer
    run = RunDirectory.create(settings.run_dir, run_config)
    return run, 0, None, optimizer


def resumed_run_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """With ``resume-from``, the stored run's ``config.json`` supplies every key the resuming
    command left at its pyproject default, so ``-c 'resume-from="RUN_DIR"'`` alone continues a
    run as it was started (deployment: ``simulation=false`` and all); keys given a non-default
    value (e.g. more ``num-server-rounds``) override it."""
    resume = str(run_config.get(RESUME_FROM, ""))
    if not resume:
        return run_config
    stored_file = Path(resume) / "config.json"
    try:
        stored = json.loads(stored_file.read_text())
    except FileNotFoundError:
        raise MoeHealthInputError(f"resume-from: {stored_file} not found (not a run directory)"
                                  ) from None
    except json.JSONDecodeError as err:
        raise MoeHealthInputError(f"resume-from: {stored_file} is corrupt ({err})") from None
    defaults = pyproject_defaults()
    merged = dict(run_config)
    for key, value in stored.items():
        if key in defaults and key not in (RESUME_FROM, RUN_DIR) and \
                run_config.get(key) == defaults[key] and value is not None:
            merged[key] = value
    return merged


def _evaluate_fn(evaluate: PooledEvaluate, run: RunDirectory, offset: int,
                 settings: FederationSettings):
    """Flower's ``evaluate_fn``: the pooled evaluation of each evaluated round (evaluate-every),
    also written to rounds.jsonl (kind "centralized-eval"); the initial model is not evaluated."""

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 or not settings.evaluates(server_round + offset):
            return None
        started = time.perf_counter()
        result = evaluate(from_array_record(arrays))
        run.append("rounds.jsonl", {"round": server_round + offset, "kind": "centralized-eval",
                                    **result, "seconds": round(time.perf_counter() - started, 3)})
        return MetricRecord({k: v for k, v in result.items() if not isinstance(v, list)})

    return evaluate_fn


def run_federation(grid: Grid, run_config: dict[str, Any],
                   simulation: SimulationHook | None) -> RunDirectory:
    """Validate the settings, open (or resume) the run directory, run the rounds, write tables."""
    run_config = resumed_run_config(run_config)
    settings = FederationSettings.from_run_config(run_config)
    simulated = bool(run_config.get(SIMULATION, False))
    if simulated and simulation is None:
        raise MoeHealthInputError("simulation = true, but this ServerApp has no simulation "
                                  "environment: run the app pyproject.toml registers "
                                  "(moehealth.serverapp:app)")
    if simulated:  # before anything is prepared or written: the likeliest mistake fails at once
        _check_supernodes(grid, int(run_config[DATA_PREFIX + "num-sites"]))
    identity = SiteIdentity.from_setting(settings.site_registry)
    run, start, arrays, optimizer = _open_run(settings, run_config)
    run.tracker = make_tracker(settings.tracking, run.path)
    try:
        _run_rounds(grid, run_config, settings, run, start, arrays, optimizer, simulation,
                    identity)
    finally:
        if run.tracker is not None:
            run.tracker.close()
        if (run.path / "rounds.jsonl").is_file():  # the results table across runs, this one in it
            try:
                write_results_table(run.path.parent)
            except OSError as err:
                log.warning("results table in %s not updated: %s", run.path.parent, err)
    return run


def _run_rounds(grid: Grid, run_config: dict[str, Any], settings: FederationSettings,
                run: RunDirectory, start: int, arrays, optimizer, simulation: SimulationHook | None,
                identity: SiteIdentity) -> None:
    """Prepare the simulated sites (if any), run the rounds, write the cross-site table."""
    model_config = model_config_from_run_config(run_config)
    simulated = bool(run_config.get(SIMULATION, False))
    print(f"moehealth: run directory {run.path} (rounds {start + 1}..{settings.num_rounds})",
          flush=True)
    if arrays is None:
        import torch

        torch.manual_seed(settings.seed)
        arrays = model_to_arrays(build_model(model_config))
        if settings.init_from:  # checked before the run directory holds anything of value
            try:
                arrays = RunDirectory.load_model(settings.init_from, arrays)
            except ValueError:
                run.discard_if_unstarted()
                raise
            print(f"moehealth: initial model from {settings.init_from}", flush=True)
    try:
        sites = simulation(run_config, run.path, start) if simulated and simulation else None
    except Exception:
        run.discard_if_unstarted()  # a run that failed before round 1 leaves no folder behind
        raise
    evaluate_fn = None
    if sites is not None and sites.pooled_evaluate is not None and settings.centralized_eval:
        evaluate_fn = _evaluate_fn(sites.pooled_evaluate, run, start, settings)
    strategy = ModalityAwareStrategy(settings, run, round_offset=start, server_optimizer=optimizer,
                                     sites_manifest=sites.sites_manifest if sites else "",
                                     identity=identity)
    result = strategy.start(grid, to_array_record(arrays), num_rounds=settings.num_rounds - start,
                            timeout=settings.round_timeout, evaluate_fn=evaluate_fn)
    if not strategy.trained_rounds:
        raise RuntimeError(f"no site contributed an update in any of rounds {start + 1}.."
                           f"{settings.num_rounds}: the run failed (see rounds.jsonl in {run.path})")
    pooled = result.evaluate_metrics_serverapp.get(settings.num_rounds - start)
    table = cross_site_table(strategy.last_site_eval, dict(pooled) if pooled else None)
    (run.path / "cross_site.md").write_text(table)
    print(table, flush=True)
    print(f"moehealth: finished; outputs in {run.path}", flush=True)

def create_server_app(simulation: SimulationHook | None = None) -> ServerApp:
    """The ServerApp, with the simulation environment when one is given."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_federation(grid, dict(context.run_config), simulation)
        except (MoeHealthInputError, ValueError) as err:
            print(f"moehealth: error: {err}", flush=True)  # the one line to act on
            raise

    return server_app


app = create_server_app()
