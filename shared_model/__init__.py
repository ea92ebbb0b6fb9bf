"""What server and sites must agree on: modalities, the MoE-Health model, parameter-group names.

Imports no flwr and nothing from client/ or server/. Names are loaded lazily so that importing
``shared_model.modalities`` or ``shared_model.config`` does not pull in torch.
"""

from importlib import import_module
from typing import Any

__all__ = ["COMBINATIONS", "Modality", "ModelConfig", "MoEHealth", "MoEOutput", "build_model"]
_HOME = {"COMBINATIONS": "modalities", "Modality": "modalities", "ModelConfig": "config",
         "MoEHealth": "moe", "MoEOutput": "moe", "build_model": "moe"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(f"shared_model.{_HOME[name]}"), name)
    raise AttributeError(f"module 'shared_model' has no attribute {name!r}")
