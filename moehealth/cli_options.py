"""Options several subcommands share; defaults from pyproject.toml, choices from the enums."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared_model.run_config import CLI_NUM_SITES, TASKS, Arm, Scheme, pyproject_defaults

DEFAULTS = pyproject_defaults()
PRESET_NAMES = ("benchmark", "benchmark-hospitals")  # simulation.prepare.PRESETS (tested)


def add_data_args(p: argparse.ArgumentParser, seed_flag: str = "--data-seed") -> None:
    """The synthetic federation: where it is cached, its size, sites, split scheme and seed."""
    p.add_argument("--data-dir", type=Path,
                   help="where synthetic data and sites are cached (default: $MOEHEALTH_CACHE/synthetic)")
    p.add_argument("--patients", type=int, default=DEFAULTS["data.patients"],
                   help="synthetic patients (default: %(default)s)")
    p.add_argument("--sites", type=int, default=CLI_NUM_SITES,
                   help="virtual sites (default: %(default)s)")
    p.add_argument("--scheme", choices=[s.value for s in Scheme], default=DEFAULTS["data.scheme"],
                   help="how patients are cut into sites (default: %(default)s)")
    p.add_argument(seed_flag, dest="data_seed", type=int, default=DEFAULTS["data.seed"],
                   help="seed of the synthetic set and partition (default: %(default)s)")
    p.add_argument("--test-patients", type=int, default=DEFAULTS["data.test-patients"],
                   help="patients of an independent test population scored instead of the "
                        "sites' test splits (0: none; default: %(default)s)")
    p.add_argument("--image-encoder", default=DEFAULTS["data.image-encoder"],
                   help="random | synthetic-pacs | a DenseNet-121 state dict (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=DEFAULTS["data.image-size"],
                   help="pixels the image backbone sees (default: %(default)s)")
    p.add_argument("--arm", choices=[a.value for a in Arm], default=DEFAULTS["data.arm"],
                   help="synthetic generator: mcar (modalities missing at random) or "
                        "hospitals-v1 (informative availability, hospitals that differ; "
                        "default: %(default)s)")
    p.add_argument("--preset", choices=PRESET_NAMES,
                   help="benchmark: 20,000 patients over 5 care-unit sites, a 12,500-patient "
                        "independent test population, image backbone pre-trained on a disjoint "
                        "synthetic PACS at 128 px; benchmark-hospitals: the same from the "
                        "hospitals-v1 arm (override the options above)")


def add_task_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", action="append", choices=TASKS,
                   help=f"prediction task, repeatable (default: {DEFAULTS['task']})")


def tasks(args: argparse.Namespace) -> list[str]:
    return args.task or [DEFAULTS["task"]]


def federation_data(args: argparse.Namespace):
    """The synthetic federation named by the options of :func:`add_data_args`."""
    from simulation.prepare import FederationData, preset_values

    where = {"data_dir": args.data_dir} if args.data_dir else {}
    values = {"patients": args.patients, "seed": args.data_seed, "num_sites": args.sites,
              "scheme": args.scheme, "test_patients": args.test_patients,
              "image_encoder": args.image_encoder, "image_size": args.image_size,
              "arm": args.arm}
    if args.preset:
        values |= preset_values(args.preset)
    return FederationData(**where, **values)
