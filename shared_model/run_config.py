"""Run-config keys both apps read (``context.run_config``); the defaults live in pyproject.toml's
``[tool.flwr.app.config]``, the one source, which the settings dataclasses are tested against."""

from __future__ import annotations

import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared_model.errors import MoeHealthInputError


class Task(StrEnum):
    """Prediction tasks (labels in the cohort, see client/mimic/cohort.py)."""

    MORTALITY = "mortality"  # in-hospital death
    LOS = "los"  # ICU stay longer than the threshold (7 days)
    READMISSION = "readmission"  # another admission within 30 days of discharge


TASKS: tuple[str, ...] = tuple(t.value for t in Task)


class Arm(StrEnum):
    """Which synthetic generator writes the data (``data.arm``; simulation/synth/hospitals.py)."""

    MCAR = "mcar"  # modalities missing completely at random, every site writes alike
    HOSPITALS = "hospitals-v1"  # informative availability, hospitals that differ


class Scheme(StrEnum):
    """How a simulation cuts the cohort into virtual sites (``data.scheme``)."""

    CAREUNIT = "careunit"  # natural: each patient's first care unit
    DIRICHLET = "dirichlet"  # label skew
    IID = "iid"

TASK = "task"
SITE_LOCAL_GROUPS = "site-local-groups"
LOCAL_GROUP_KINDS = ("gate", "head")  # groups a site may keep to itself (FedPer-style)
SIMULATION = "simulation"
DATA_PREFIX = "data."
DP_PREFIX = "dp."
MODEL_PREFIX = "model."
CLI_NUM_SITES = 5  # virtual sites of the CLI's data commands (in `flwr run`, data.num-sites = 0
#                    means one per SuperNode)
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def site_local_groups(value: object) -> tuple[str, ...]:
    """The ``site-local-groups`` run-config value ("" or a comma list of :data:`LOCAL_GROUP_KINDS`)
    as a tuple; anything else is one error naming the key."""
    names = tuple(n.strip() for n in str(value).split(",") if n.strip())
    unknown = [n for n in names if n not in LOCAL_GROUP_KINDS]
    if not isinstance(value, str) or unknown:
        raise MoeHealthInputError(f"{SITE_LOCAL_GROUPS}: {value!r} is not \"\" or a comma list of "
                                  f"{', '.join(LOCAL_GROUP_KINDS)}")
    return names


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> Flower's dotted run-config keys."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pyproject_defaults(path: Path = PYPROJECT) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of the app as flat run-config keys and default values."""
    if not path.is_file():
        raise MoeHealthInputError(f"{path}: not found; moehealth runs from its source tree or app "
                                  "bundle (install it with `pip install -e .`)")
    data = tomllib.loads(path.read_text())
    return flatten(data["tool"]["flwr"]["app"]["config"])


def key_comments(path: Path = PYPROJECT) -> dict[str, str]:
    """The comment written beside each run-config key in pyproject.toml (its meaning)."""
    comments: dict[str, str] = {}
    section = None
    for line in path.read_text().splitlines():
        header = re.match(r"^\[tool\.flwr\.app\.config(\.[\w-]+)?\]", line)
        if header:
            section = (header.group(1) or "").lstrip(".")
        elif line.startswith("["):
            section = None
        elif section is not None and (entry := re.match(r"^([\w-]+)\s*=[^#]*#\s*(.*)$", line)):
            comments[f"{section}.{entry.group(1)}" if section else entry.group(1)] = entry.group(2)
    return comments
