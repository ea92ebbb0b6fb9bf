"""Flower ServerApp: set up the run, hand the rounds to the strategy.

``server.app:app`` is the coordinator of a deployment (sites own their data). A simulation also
needs its virtual sites prepared and, optionally, an evaluation on the pooled test split; those
come from a :class:`SimulationEnvironment` that the composition root (``moehealth/serverapp.py``, the app
pyproject.toml registers) passes to :func:`create_server_app`, so server/ never imports
simulation/.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from server.aggregation import FedAdamState
from server.flower_io import to_array_record
from server.identity import SiteIdentity
from server.report import cross_site_table
from server.results import write_results_table
from server.run_config_check import check_run_config
from server.run_dir import RunDirectory
from server.settings import FederationSettings
from server.strategy import ModalityAwareStrategy
from server.tracking import make_tracker
from shared_model import build_model
from shared_model.config import model_config_from_run_config
from shared_model.errors import MoeHealthInputError
from shared_model.params import model_to_arrays
from shared_model.protocol import arrays_from_record
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


NUM_SITES = DATA_PREFIX + "num-sites"  # 0: one virtual site per simulated SuperNode


def simulated_site_count(grid: Grid, requested: int, wait_s: float = 10.0) -> int:
    """The number of virtual sites: ``data.num-sites``, or with 0 the simulation's SuperNodes (so
    plain ``flwr run .`` works with Flower's default federation). Stop before round 1 when a
    number was set and the simulation has another number of SuperNodes."""
    deadline = time.monotonic() + wait_s
    found, before = len(list(grid.get_node_ids())), -1
    while time.monotonic() < deadline and (
            found < requested or (requested == 0 and (found == 0 or found != before))):
        time.sleep(1.0)  # with 0: until the count holds still (SuperNodes may still register)
        found, before = len(list(grid.get_node_ids())), found
    if requested == 0 and found > 0:
        return found
    if found != requested:
        raise MoeHealthInputError(
            f"the simulation has {found} SuperNodes but data.num-sites = {requested}: run with "
            f"--federation-config 'num-supernodes={requested}', or set -c 'data.num-sites=0' "
            "(one site per SuperNode)")
    return found


@dataclass(frozen=True)
class SimulationEnvironment:
    """What a simulated run adds (simulation/environment.py, composed in moehealth/serverapp.py):
    ``check`` the simulation's run-config keys before any data work, then ``prepare`` the
    virtual sites (run config, run directory, start round)."""

    check: Callable[[dict[str, Any]], int]  # -> sites the data needs (0: one per SuperNode)
    prepare: Callable[[dict[str, Any], Path, int], SimulatedSites]


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


def resumed_run_config(run_config: dict[str, Any],
                       given: Collection[str] | None = None) -> dict[str, Any]:
    """With ``resume-from``, the stored run's ``config.json`` supplies every key the resuming
    command did not give, so ``-c 'resume-from="RUN_DIR"'`` alone continues a run as it was
    started (deployment: ``simulation=false`` and all); keys given (e.g. more
    ``num-server-rounds``) override it, also when the value given is the pyproject default.
    ``given``: the keys of the run's overrides (Flower's ``Run.override_config``); where unknown,
    a key left at its pyproject default counts as not given."""
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
        if key not in defaults or key in (RESUME_FROM, RUN_DIR) or value is None:
            continue
        if (key not in given) if given is not None else run_config.get(key) == defaults[key]:
            merged[key] = value
    return merged


def given_keys(grid: Grid) -> set[str] | None:
    """The run-config keys the run's command gave (``-c``), as the SuperLink stored them."""
    try:
        return set(grid.run.override_config)
    except (AttributeError, TypeError):
        return None


def _evaluate_fn(evaluate: PooledEvaluate, run: RunDirectory, offset: int,
                 settings: FederationSettings):
    """Flower's ``evaluate_fn``: the pooled evaluation of each evaluated round (evaluate-every),
    also written to rounds.jsonl (kind "centralized-eval"); the initial model is not evaluated."""

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 or not settings.evaluates(server_round + offset):
            return None
        started = time.perf_counter()
        result = evaluate(arrays_from_record(arrays))
        run.append("rounds.jsonl", {"round": server_round + offset, "kind": "centralized-eval",
                                    **result, "seconds": round(time.perf_counter() - started, 3)})
        return MetricRecord({k: v for k, v in result.items() if not isinstance(v, list)})

    return evaluate_fn


def run_federation(grid: Grid, run_config: dict[str, Any],
                   simulation: SimulationEnvironment | None) -> RunDirectory:
    """Check the whole run configuration (before any data work), open (or resume) the run
    directory, run the rounds, write tables."""
    run_config = resumed_run_config(run_config, given_keys(grid))
    settings = check_run_config(run_config)
    simulated = bool(run_config.get(SIMULATION, False))
    if simulated and simulation is None:
        raise MoeHealthInputError("simulation = true, but this ServerApp has no simulation "
                                  "environment: run the app pyproject.toml registers "
                                  "(moehealth.serverapp:app)")
    if simulated and simulation is not None:  # before anything is prepared or written
        required = simulation.check(run_config)
        run_config[NUM_SITES] = simulated_site_count(grid, required)
        if required == 0:  # one site per SuperNode: dp.sites against the sites there will be
            simulation.check(run_config)
    identity = SiteIdentity.from_setting(settings.site_registry)
    run, start, arrays, optimizer = _open_run(settings, run_config)
    run.tracker = make_tracker(settings.tracking, run.path)
    run.mark_running()
    try:
        _run_rounds(grid, run_config, settings, run, start, arrays, optimizer, simulation,
                    identity)
    finally:
        run.mark_stopped()
        if run.tracker is not None:
            run.tracker.close()
        if (run.path / "rounds.jsonl").is_file():  # the results table across runs, this one in it
            try:
                write_results_table(run.path.parent)
            except OSError as err:
                log.warning("results table in %s not updated: %s", run.path.parent, err)
    return run


def _run_rounds(grid: Grid, run_config: dict[str, Any], settings: FederationSettings,
                run: RunDirectory, start: int, arrays, optimizer,
                simulation: SimulationEnvironment | None,
                identity: SiteIdentity) -> None:
    """Prepare the simulated sites (if any), run the rounds, write the cross-site table."""
    model_config = model_config_from_run_config(run_config)
    simulated = bool(run_config.get(SIMULATION, False))
    print(f"moehealth: run directory {run.path} (rounds {start + 1}..{settings.num_rounds})",
          flush=True)
    if settings.site_local_groups:
        print(f"moehealth: each site keeps its own {settings.site_local_groups} "
              "(site-local-groups): never sent, so the global model's copy keeps its initial "
              "value; site metrics are of each site's own model", flush=True)
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
        sites = simulation.prepare(run_config, run.path, start) if simulated and simulation \
            else None
    except Exception:
        run.discard_if_unstarted()  # a run that failed before round 1 leaves no folder behind
        raise
    evaluate_fn = None
    if sites is not None and sites.pooled_evaluate is not None and settings.centralized_eval:
        evaluate_fn = _evaluate_fn(sites.pooled_evaluate, run, start, settings)
    strategy = ModalityAwareStrategy(settings, run, round_offset=start, server_optimizer=optimizer,
                                     sites_manifest=sites.sites_manifest if sites else "",
                                     identity=identity)
    with _without_final_results_dump():
        result = strategy.start(grid, to_array_record(arrays),
                                num_rounds=settings.num_rounds - start,
                                timeout=settings.round_timeout, evaluate_fn=evaluate_fn)
    if not strategy.trained_rounds:
        raise RuntimeError(f"no site contributed an update in any of rounds {start + 1}.."
                           f"{settings.num_rounds}: the run failed (see rounds.jsonl in {run.path})")
    pooled = result.evaluate_metrics_serverapp.get(settings.num_rounds - start)
    table = cross_site_table(strategy.last_site_eval, dict(pooled) if pooled else None)
    (run.path / "cross_site.md").write_text(table)
    print(table, flush=True)
    print(f"moehealth: finished; outputs in {run.path}; report: moehealth report {run.path}",
          flush=True)


class _FinalResultsDump(logging.Filter):
    """Drops Flower's "Final results:" block (every round's metrics again, in scientific
    notation) that ``Strategy.start`` logs at its end: the run's cross-site table, printed next,
    and rounds.jsonl hold the same numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.dropping = False

    def filter(self, record: logging.LogRecord) -> bool:
        self.dropping = self.dropping or record.getMessage() == "Final results:"
        return not self.dropping


@contextmanager
def _without_final_results_dump() -> Iterator[None]:
    flower_log, dump = logging.getLogger("flwr"), _FinalResultsDump()
    flower_log.addFilter(dump)
    try:
        yield
    finally:
        flower_log.removeFilter(dump)


class _InputErrorWithoutTraceback(logging.Filter):
    """Flower 1.42 logs every exception that ends a ServerApp with its traceback (then "Exit
    Code: 700" and the run ends ``finished:failed`` with the message in its status details).
    For an input error the ServerApp's own one line (``moehealth: error: ...``) says everything:
    the traceback record is dropped; any other exception keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, MoeHealthInputError)


def create_server_app(simulation: SimulationEnvironment | None = None) -> ServerApp:
    """The ServerApp, with the simulation environment when one is given."""
    server_app = ServerApp()
    flower_log = logging.getLogger("flwr")
    if not any(isinstance(f, _InputErrorWithoutTraceback) for f in flower_log.filters):
        flower_log.addFilter(_InputErrorWithoutTraceback())

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_federation(grid, dict(context.run_config), simulation)
        except (MoeHealthInputError, ValueError) as err:
            print(f"moehealth: error: {err}", flush=True)  # the one line to act on
            raise

    return server_app


app = create_server_app()
