"""Everything a run's configuration can be checked for before any data work: every key known,
each value of its default's type, the coordinator's settings, and the files the run names
(``init-from``, ``site-registry``; ``resume-from`` is read, and so checked, by
``server.app.resumed_run_config`` before this runs). The ServerApp runs it first; ``moehealth
config --check`` runs it (with the simulation's own checks) without starting Flower."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server.identity import read_registry
from server.settings import FederationSettings
from shared_model.errors import MoeHealthInputError, closest_key_hint
from shared_model.run_config import pyproject_defaults


def check_keys_and_types(run_config: Mapping[str, Any],
                         defaults: Mapping[str, Any] | None = None) -> None:
    """Each key is one of pyproject.toml's ``[tool.flwr.app.config]``, with a value of its
    default's type (an integer passes for a float)."""
    defaults = pyproject_defaults() if defaults is None else defaults
    for key, value in run_config.items():
        if key not in defaults:
            raise MoeHealthInputError(f"run config: unknown key '{key}'"
                                      + closest_key_hint(key, sorted(defaults)))
        expected = type(defaults[key])
        if isinstance(value, bool) != (expected is bool) or not (
                isinstance(value, expected)
                or (expected is float and isinstance(value, int) and not isinstance(value, bool))):
            raise MoeHealthInputError(f"run config: {key} = {value!r} must be {_kind(expected)} "
                                      f"(like its default {json.dumps(defaults[key])})")


def _kind(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a quoted string"}.get(kind, kind.__name__)


def check_files(settings: FederationSettings) -> None:
    """The files a run names exist and are what they should be (read, never written)."""
    if settings.init_from:
        check_model_file(Path(settings.init_from))
    if settings.site_registry:
        read_registry(Path(settings.site_registry))


def check_model_file(path: Path) -> None:
    """``init-from``: a safetensors checkpoint, or a run folder with one (header read only)."""
    from safetensors import safe_open

    if path.is_dir():
        checkpoints = sorted((path / "checkpoints").glob("round-*.safetensors"))
        if not checkpoints:
            raise MoeHealthInputError(f"init-from: {path} is a folder without checkpoints/")
        path = checkpoints[-1]
    if not path.is_file():
        raise MoeHealthInputError(f"init-from: {path} not found")
    try:
        with safe_open(str(path), framework="numpy") as checkpoint:
            names = list(checkpoint.keys())
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MoeHealthInputError(f"init-from: {path} is not a safetensors model ({first})"
                                  ) from None
    if not names:
        raise MoeHealthInputError(f"init-from: {path} holds no tensors")


def check_run_config(run_config: Mapping[str, Any]) -> FederationSettings:
    """The coordinator's checks of a run's configuration; its settings when they pass."""
    check_keys_and_types(run_config)
    try:
        settings = FederationSettings.from_run_config(dict(run_config))
    except ValueError as err:
        raise MoeHealthInputError(f"run config: {err}") from None
    check_files(settings)
    return settings
