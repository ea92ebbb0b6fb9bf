"""pyproject.toml's [tool.flwr.app.config] is the one source of run defaults: every settings
dataclass agrees with it, and every key there is read by exactly one of them."""

from __future__ import annotations

from dataclasses import MISSING, fields

from client.privacy.settings import RUN_CONFIG
from client.privacy.settings import SETTINGS as DP_SETTINGS
from server.settings import FederationSettings
from shared_model.config import ModelConfig
from shared_model.protocol import MIN_CELL_SIZE
from shared_model.run_config import (
    CLI_NUM_SITES,
    DATA_PREFIX,
    MODEL_PREFIX,
    SIMULATION,
    pyproject_defaults,
)
from simulation.environment import DP_SITES, SITE_MIN_CELL_SIZE
from simulation.prepare import PRESET_KEY, FederationData

DEFAULTS = pyproject_defaults()


def _default(cls, name: str):
    field = next(f for f in fields(cls) if f.name == name)
    return field.default if field.default is not MISSING else field.default_factory()


def test_federation_settings_defaults_equal_pyproject() -> None:
    for key, name in FederationSettings.KEYS.items():
        assert _default(FederationSettings, name) == DEFAULTS[key], key


def test_federation_data_defaults_equal_pyproject() -> None:
    for key, name in FederationData.KEYS.items():
        value = DEFAULTS[DATA_PREFIX + key]
        if value == "":  # "" in pyproject means "derive it" (a default path, no MIMIC root)
            continue
        if key == "num-sites":  # 0: one site per SuperNode (flwr run); the CLI's default: 5
            assert value == 0 and _default(FederationData, name) == CLI_NUM_SITES
            continue
        assert _default(FederationData, name) == value, key


def test_model_defaults_equal_pyproject() -> None:
    for f in fields(ModelConfig):
        key = MODEL_PREFIX + f.name.replace("_", "-")
        if key in DEFAULTS:
            value = DEFAULTS[key]
            expected = tuple(value.split(",")) if f.name == "modalities" else value
            assert _default(ModelConfig, f.name) == expected, key


def test_every_pyproject_key_is_read_by_exactly_one_reader() -> None:
    readers = {
        "FederationSettings": set(FederationSettings.KEYS),
        "FederationData": {DATA_PREFIX + k for k in FederationData.KEYS},
        "simulation": {DATA_PREFIX + "profile", PRESET_KEY, SIMULATION, DP_SITES, SITE_MIN_CELL_SIZE},
        "DPSettings": {RUN_CONFIG.key(s.name) for s in DP_SETTINGS},
        "ModelConfig": {MODEL_PREFIX + f.name.replace("_", "-") for f in fields(ModelConfig)},
    }
    assert DEFAULTS[SITE_MIN_CELL_SIZE] == MIN_CELL_SIZE
    count = {key: [name for name, keys in readers.items() if key in keys] for key in DEFAULTS}
    assert not [k for k, names in count.items() if not names], "keys nobody reads"
    assert not {k: names for k, names in count.items() if len(names) > 1}, "keys read twice"
