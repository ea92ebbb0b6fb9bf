"""The model file both sides read: a safetensors checkpoint of the global model.

The coordinator writes one per round (``RUN_DIR/checkpoints/round-NNN.safetensors``, with its
server optimizer's state under ``server_optimizer/``) and ``moehealth train`` writes a plain one;
``init-from`` starts a run from either and a hospital personalizes the released one
(``moehealth site personalize``). Reading checks every name and shape against the model that will
hold the arrays, so a file of another ``model.*`` configuration is one clear error."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

OPT_PREFIX = "server_optimizer/"  # the coordinator's server-optimizer state in a round checkpoint


def split_checkpoint(tensors: Mapping[str, np.ndarray]
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A checkpoint's (model arrays, server optimizer state)."""
    model = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    opt = {k[len(OPT_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    return model, opt


def read_model_file(path: Path, what: str = "model file") -> dict[str, np.ndarray]:
    """The model arrays of a safetensors file (server optimizer state left out); ``ValueError``
    naming ``what`` and the file when it is missing or unreadable."""
    try:
        return split_checkpoint(load_file(str(path)))[0]
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} not found") from None
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        raise ValueError(f"{what}: {path} is not a readable checkpoint "
                         f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                         ) from None


def check_fits(arrays: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], path: Path,
               what: str = "model file") -> None:
    """``ValueError`` unless ``arrays`` has exactly ``expected``'s names and shapes."""
    missing = sorted(set(expected) - set(arrays))
    unknown = sorted(set(arrays) - set(expected))
    wrong = sorted(k for k in set(expected) & set(arrays) if arrays[k].shape != expected[k].shape)
    if missing or unknown or wrong:
        first = (missing or unknown or wrong)[0]
        raise ValueError(f"{what}: {path} does not fit this run's model ({len(missing)} "
                         f"missing, {len(unknown)} unknown, {len(wrong)} of another shape, "
                         f"e.g. {first}): same model.* settings?")


def write_model_file(path: Path, tensors: Mapping[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors checkpoint atomically (a temporary file, then renamed over ``path``),
    so a crash never leaves a half-written model that looks valid."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
              metadata=metadata)
    os.replace(tmp, path)
    return path
