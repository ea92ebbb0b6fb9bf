"""Options several subcommands share; defaults from pyproject.toml, choices from the enums."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared_model.run_config import TASKS, Scheme, pyproject_defaults

DEFAULTS = pyproject_defaults()


def add_data_args(p: argparse.ArgumentParser, seed_flag: str = "--data-seed") -> None:
    """The synthetic federation: where it is cached, its size, sites, split scheme and seed."""
    p.add_argument("--data-dir", type=Path,
                   help="where synthetic data and sites are cached (default: $MOEHEALTH_CACHE/synthetic)")
    p.add_argument("--patients", type=int, default=DEFAULTS["data.patients"],
                   help="synthetic patients (default: %(default)s)")
    p.add_argument("--sites", type=int, default=DEFAULTS["data.num-sites"],
                   help="virtual sites (default: %(default)s)")
    p.add_argument("--scheme", choices=[s.value for s in Scheme], default=DEFAULTS["data.scheme"],
                   help="how patients are cut into sites (default: %(default)s)")
    p.add_argument(seed_flag, dest="data_seed", type=int, default=DEFAULTS["data.seed"],
                   help="seed of the synthetic set and partition (default: %(default)s)")


def add_task_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", action="append", choices=TASKS,
                   help=f"prediction task, repeatable (default: {DEFAULTS['task']})")


def tasks(args: argparse.Namespace) -> list[str]:
    return args.task or [DEFAULTS["task"]]


def federation_data(args: argparse.Namespace):
    """The synthetic federation named by the options of :func:`add_data_args`."""
    from simulation.prepare import FederationData

    where = {"data_dir": args.data_dir} if args.data_dir else {}
    return FederationData(**where, patients=args.patients, seed=args.data_seed,
                          num_sites=args.sites, scheme=args.scheme)
