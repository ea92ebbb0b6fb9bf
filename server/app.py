"""Flower ServerApp (``server.app:app``): set up the run, hand the rounds to the strategy."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from client.records import to_array_record
from server.aggregation import FedAdamState
from server.report import cross_site_table
from server.run_dir import RunDirectory
from server.settings import FederationSettings
from server.strategy import ModalityAwareStrategy
from shared_model import build_model
from shared_model.config import model_config_from_run_config
from shared_model.params import model_to_arrays

app = ServerApp()
log = logging.getLogger(__name__)


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


def _recorded(evaluate_fn, run: RunDirectory, offset: int):
    """Also write each centralized evaluation to rounds.jsonl (kind "centralized-eval")."""

    def evaluate(server_round: int, arrays):
        result = evaluate_fn(server_round, arrays)
        if result is not None and server_round > 0:
            run.append("rounds.jsonl", {"round": server_round + offset, "kind": "centralized-eval",
                                        **dict(result)})
        return result

    return evaluate


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    settings = FederationSettings.from_run_config(run_config)
    model_config = model_config_from_run_config(run_config)
    run, start, arrays, optimizer = _open_run(settings, run_config)
    print(f"moehealth: run directory {run.path} (rounds {start + 1}..{settings.num_rounds})",
          flush=True)
    if arrays is None:
        import torch

        torch.manual_seed(settings.seed)
        arrays = model_to_arrays(build_model(model_config))
    evaluate_fn = None
    if run_config.get("simulation", True):
        from simulation.central_eval import pooled_test_evaluator
        from simulation.prepare import FederationData, prepare_sites

        prepare_sites(FederationData.from_run_config(run_config))  # sites find their caches ready
        if settings.centralized_eval:
            evaluate_fn = _recorded(pooled_test_evaluator(run_config, settings.task, model_config),
                                    run, start)
    strategy = ModalityAwareStrategy(settings, run, round_offset=start, server_optimizer=optimizer)
    result = strategy.start(grid, to_array_record(arrays), num_rounds=settings.num_rounds - start,
                            timeout=settings.round_timeout, evaluate_fn=evaluate_fn)
    pooled = result.evaluate_metrics_serverapp.get(settings.num_rounds - start)
    table = cross_site_table(strategy.last_site_eval, dict(pooled) if pooled else None)
    (run.path / "cross_site.md").write_text(table)
    print(table, flush=True)
    print(f"moehealth: finished; outputs in {run.path}", flush=True)
