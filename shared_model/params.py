"""Parameter groups and the torch <-> numpy conversion that server and sites share.

A group is the name prefix that decides the aggregation rule: ``encoders.<m>``, ``missing.<m>``,
``gate``, ``experts.<combo>`` or ``head``. Opacus' ``_module.`` wrapper prefix is stripped here,
in one place, so DP and non-DP sites exchange identical names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

_OPACUS_PREFIX = "_module."


def canonical_name(name: str) -> str:
    """Strip Opacus' wrapper prefix(es) from a parameter name."""
    while name.startswith(_OPACUS_PREFIX):
        name = name[len(_OPACUS_PREFIX):]
    return name


def parameter_group(name: str) -> str:
    """``encoders.ehr.lstm.weight_ih_l0`` -> ``encoders.ehr``; ``gate.0.bias`` -> ``gate``."""
    parts = canonical_name(name).split(".")
    if parts[0] in ("encoders", "missing", "experts"):
        if len(parts) < 2:
            raise ValueError(f"parameter name '{name}' lacks its modality or combination")
        return f"{parts[0]}.{parts[1]}"
    if parts[0] in ("gate", "head"):
        return parts[0]
    raise ValueError(f"parameter '{name}' belongs to no known group")


def group_names(model: nn.Module) -> list[str]:
    """Groups of a model, in parameter order, without repeats."""
    return list(dict.fromkeys(parameter_group(n) for n, _ in model.named_parameters()))


def model_to_arrays(model: nn.Module, groups: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Trainable parameters as float32 numpy arrays by canonical name (optionally some groups)."""
    wanted = set(groups) if groups is not None else None
    out = {}
    for name, param in model.named_parameters():
        name = canonical_name(name)
        if wanted is None or parameter_group(name) in wanted:
            out[name] = param.detach().cpu().numpy().astype(np.float32, copy=True)
    return out


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray], *, partial: bool = False
                ) -> list[str]:
    """Copy ``arrays`` into ``model``'s parameters in place; return the names loaded.

    Unknown names and shape mismatches raise ``ValueError``; with ``partial=False`` every model
    parameter must be present.
    """
    params = {canonical_name(n): p for n, p in model.named_parameters()}
    unknown = sorted(set(arrays) - set(params))
    if unknown:
        raise ValueError(f"unknown parameter(s) for this model: {', '.join(unknown[:3])}")
    missing = sorted(set(params) - set(arrays))
    if missing and not partial:
        raise ValueError(f"missing parameter(s): {', '.join(missing[:3])}")
    with torch.no_grad():
        for name, value in arrays.items():
            target = params[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name}: shape {tuple(value.shape)} does not match "
                                 f"{tuple(target.shape)}")
            target.copy_(torch.as_tensor(np.asarray(value), dtype=target.dtype))
    return list(arrays)


def count_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Payload size of a set of arrays in bytes."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))
