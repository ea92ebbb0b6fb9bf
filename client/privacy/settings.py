"""A site's own DP settings; imports no Opacus (a non-DP site never loads it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from client.errors import MoeHealthInputError
from shared_model import ModelConfig
from shared_model.protocol import DP_NODE_PREFIX


def _flag(value: Any) -> bool:
    """true/false only (a bool, or its text): "yes", 1 or "on" are refused, not guessed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _number(kind: type) -> Any:
    """A converter to ``kind`` that refuses booleans (``True`` is an int in Python) and NaN;
    infinity passes (only ``target-epsilon`` accepts it, see ``DPSettings``)."""
    def convert(value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        number = kind(value)
        if isinstance(number, float) and math.isnan(number):
            raise ValueError("expected a number, got nan")
        return number
    return convert


DP_TRAIN = ("all", "fusion")  # what a DP site trains: every declared group, or no encoder
PRIVACY_UNITS = ("patient", "stay")  # what one Poisson-sampled, clipped contribution is


@dataclass(frozen=True)
class DPSettings:
    """A site's own DP configuration (see the module docstring)."""

    enabled: bool = False
    target_epsilon: float = 8.0
    delta: float | None = None  # default min(1/n, 1e-5), n = the site's training samples
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None  # None: calibrate once for the planned rounds
    planned_rounds: int = 0  # 0: the rounds left in the run when the site first trains
    public_weight: int = 1  # aggregation weight sent instead of private sample counts
    share_evaluation: bool = False  # evaluation metrics are outside the DP guarantee
    batch_size: int = 0  # expected Poisson batch of DP-SGD; 0: the run's batch-size
    train: str = "all"  # "all" declared groups, or "fusion": encoders frozen (e.g. init-from)
    unit: str = "patient"  # privacy unit: a patient (all its stays) or one ICU stay

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if not math.isfinite(self.max_grad_norm) or any(
                v is not None and not math.isfinite(v) for v in (self.delta, self.noise_multiplier)):
            raise MoeHealthInputError("DP: max grad norm, delta and noise multiplier must be "
                                      "finite numbers")
        if self.target_epsilon <= 0 or self.max_grad_norm <= 0:
            raise MoeHealthInputError(f"DP: target epsilon ({self.target_epsilon}) and max grad "
                                      f"norm ({self.max_grad_norm}) must be positive")
        if self.planned_rounds < 0 or self.public_weight < 1:
            raise MoeHealthInputError("DP: planned rounds must be >= 0 (0 = the run's) and the "
                                      "public weight >= 1")
        if self.delta is not None and not 0 < self.delta < 1:
            raise MoeHealthInputError(f"DP: delta must be in (0, 1), got {self.delta}")
        if self.noise_multiplier is not None and self.noise_multiplier <= 0:
            raise MoeHealthInputError("DP: noise multiplier must be positive")
        if self.without_noise and self.noise_multiplier is not None:
            raise MoeHealthInputError("DP: target epsilon inf (no noise) and a noise multiplier "
                                      "contradict each other; set one")
        if self.batch_size < 0:
            raise MoeHealthInputError(f"DP: batch size must be >= 0 (0 = the run's), got "
                                      f"{self.batch_size}")
        if self.unit not in PRIVACY_UNITS:
            raise MoeHealthInputError(f"DP: unit must be one of {', '.join(PRIVACY_UNITS)}, got "
                                      f"{self.unit!r}")
        if self.train not in DP_TRAIN:
            raise MoeHealthInputError(f"DP: train must be one of {', '.join(DP_TRAIN)}, got "
                                      f"{self.train!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], prefix: str = "dp.") -> DPSettings:
        """Every field as ``<prefix><field-with-dashes>`` (``dp.target-epsilon``, node config
        ``dp-target-epsilon``, site YAML ``target-epsilon``); an absent key takes the default,
        ``delta`` / ``noise-multiplier`` of 0 or "" mean "derive it" (see the fields), and a value
        of the wrong type is an error naming the key."""
        given = {f.name: values[prefix + f.name.replace("_", "-")] for f in fields(cls)
                 if prefix + f.name.replace("_", "-") in values}
        for derived in ("delta", "noise_multiplier"):
            if given.get(derived) in ("", 0, 0.0):
                given[derived] = None
        converted = {}
        for name, value in given.items():
            try:
                converted[name] = None if value is None else _KINDS[name](value)
            except (TypeError, ValueError) as err:
                raise MoeHealthInputError(f"DP setting '{prefix}{name.replace('_', '-')}': "
                                          f"{err}") from None
        return cls(**converted)

    def node_config(self) -> dict[str, bool | float | int]:
        """The same settings as a SuperNode's ``dp-*`` node-config keys (unset ones left out)."""
        return {f"{DP_NODE_PREFIX}{f.name.replace('_', '-')}": getattr(self, f.name)
                for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def without_noise(self) -> bool:
        """``target-epsilon = inf``: the DP-SGD recipe (Poisson sampling, clipping, the DP model)
        with no noise and so no privacy guarantee; for measuring what the noise costs in
        simulation (a hospital's site configuration refuses it)."""
        return self.enabled and math.isinf(self.target_epsilon)

    def delta_for(self, n_train: int) -> float:
        return self.delta if self.delta is not None else min(1.0 / max(n_train, 1), 1e-5)


_KINDS = {"enabled": _flag, "target_epsilon": _number(float), "delta": _number(float),
          "max_grad_norm": _number(float), "noise_multiplier": _number(float),
          "planned_rounds": _number(int), "public_weight": _number(int),
          "share_evaluation": _flag, "batch_size": _number(int), "train": str, "unit": str}


def dp_model_config(config: ModelConfig) -> ModelConfig:
    """The model a DP site trains: DPLSTM and the per-sample balance regularizer."""
    return replace(config, lstm="dp", balance="kl")
