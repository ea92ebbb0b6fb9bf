"""The ServerApp that pyproject.toml registers: the coordinator (server/) composed with the
simulation environment (simulation/), which is imported only when a run simulates its sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import shared_model.progress_bars  # noqa: F401  (first: before anything imports tqdm)
from server.app import SimulatedSites, SimulationEnvironment, create_server_app


def _check(run_config: dict[str, Any]) -> int:
    from simulation.environment import check_simulation_config

    return check_simulation_config(run_config)


def _simulated_sites(run_config: dict[str, Any], run_dir: Path, start_round: int
                     ) -> SimulatedSites:
    from simulation.environment import simulated_sites

    return simulated_sites(run_config, run_dir, start_round)


app = create_server_app(SimulationEnvironment(_check, _simulated_sites))
