"""A site's own DP settings, each declared once in :data:`SETTINGS`; imports no Opacus (a non-DP
site never loads it).

A setting is written three ways, all derived from its declared name (``target-epsilon``):
the site YAML ``privacy.target_epsilon`` (client/site/config.py), the SuperNode node config
``dp-target-epsilon`` (what the ClientApp reads) and, in simulation only, the run config
``dp.target-epsilon`` (pyproject.toml, standing in for each hospital's file). The dataclass
:class:`DPSettings`, the node-config keys, the YAML's known keys, ``moehealth config --site`` and
README's table are all built from :data:`SETTINGS`; tests/test_settings.py ties pyproject.toml's
defaults and comments and README's table to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any

from client.errors import MoeHealthInputError
from shared_model import ModelConfig
from shared_model.run_config import DP_PREFIX


def _flag(value: Any) -> bool:
    """true/false only (a bool, or its text): "yes", 1 or "on" are refused, not guessed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _number(kind: type) -> Callable[[Any], int | float]:
    """A converter to ``kind`` that refuses booleans (``True`` is an int in Python) and NaN;
    infinity passes (only ``target-epsilon`` accepts it, see ``_validate``)."""
    def convert(value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        number = kind(value)
        if isinstance(number, float) and math.isnan(number):
            raise ValueError("expected a number, got nan")
        return number
    convert.__name__ = kind.__name__
    return convert


@dataclass(frozen=True)
class Spelling:
    """Where a setting is written and how its key is spelled there."""

    where: str
    prefix: str  # before the name
    dashes: bool  # kebab-case name (node and run config) or snake_case (YAML)
    shown_prefix: str = ""  # how an error names the key, in front of the key itself

    def key(self, name: str) -> str:
        """The key of the declared (kebab-case) ``name`` in this spelling."""
        return self.prefix + (name if self.dashes else name.replace("-", "_"))

    def shown(self, name: str) -> str:
        return self.shown_prefix + self.key(name)


SITE_YAML = Spelling("site YAML", "", dashes=False, shown_prefix="privacy.")
NODE_CONFIG = Spelling("node config", "dp-", dashes=True)
RUN_CONFIG = Spelling("run config (simulation only)", DP_PREFIX, dashes=True)
SPELLINGS = (SITE_YAML, NODE_CONFIG, RUN_CONFIG)


@dataclass(frozen=True)
class Setting:
    """One DP setting: its name (kebab-case), type, default, unit and meaning."""

    name: str
    kind: Callable[[Any], Any]
    default: Any
    unit: str
    help: str  # one line: pyproject.toml's comment beside dp.<name>, `moehealth config --site`
    detail: str = ""  # README's table adds it to ``help``
    shown_default: str = ""  # README's default where the value is derived at run time
    choices: tuple[str, ...] = ()
    derived_when: tuple[Any, ...] = ()  # values meaning "derive it" (unset)

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")


DP_TRAIN = ("all", "fusion")  # what a DP site trains: every declared group, or no encoder
PRIVACY_UNITS = ("patient", "stay")  # what one Poisson-sampled, clipped contribution is

SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", _flag, False, "", "DP-SGD at this site (simulation: at the sites in "
            "dp.sites)"),
    Setting("unit", str, "patient", "", "privacy unit: patient (one sampled stay per patient per "
            "step) or stay", detail="q is over the units", choices=PRIVACY_UNITS),
    Setting("target-epsilon", _number(float), 8.0, "epsilon over the run",
            "the site's budget for the run; a round that would exceed it is declined",
            detail="Simulation only: `inf` runs the same DP-SGD recipe with noise 0 (no guarantee; "
                   "the ledger says epsilon inf) to measure what the noise costs; a site YAML "
                   "refuses it"),
    # None (run config and YAML: 0) means min(1/n, 1e-5), n = the site's training units.
    Setting("delta", _number(float), None, "probability",
            "0: min(1/n, 1e-5) with n the site's training units", shown_default="min(1/n, 1e-5)",
            derived_when=("", 0, 0.0)),
    Setting("max-grad-norm", _number(float), 1.0, "L2 norm", "per-unit clipping norm C"),
    Setting("noise-multiplier", _number(float), None, "sigma / C",
            "0: calibrate once (PRV accountant) so the planned rounds spend exactly the budget",
            shown_default="calibrated", derived_when=("", 0, 0.0)),
    Setting("planned-rounds", _number(int), 0, "rounds",
            "0: plan for the rounds the run has left when the site first trains",
            detail="Setting it takes the plan out of the coordinator's hands"),
    Setting("public-weight", _number(int), 1, "weight",
            "aggregation weight sent instead of private sample counts",
            detail="For example the site's published ICU volume"),
    Setting("share-evaluation", _flag, False, "",
            "send evaluation metrics (outside the DP guarantee)"),
    Setting("batch-size", _number(int), 0, "units per step (expected)",
            "expected Poisson batch of DP-SGD; 0: the run's batch-size",
            detail="Hundreds suit DP: the noise is added once per step, so larger batches mean "
                   "less noise per unit. Set here, the coordinator's `batch-size` does not touch "
                   "it; left at 0, the run's value at the first trained DP round is fixed"),
    Setting("train", str, "all", "",
            "all: every declared group; fusion: indicators, gate, experts only (encoders frozen)",
            detail="`fusion` suits a start from encoders pre-trained on public data (`init-from`): "
                   "far fewer parameters share the noise", choices=DP_TRAIN),
)


class _DPSettingsBase:
    """Validation and key spellings of :class:`DPSettings` (its fields come from SETTINGS)."""

    def __post_init__(self) -> None:
        if self.enabled:
            _validate(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], spelling: Spelling = RUN_CONFIG
                     ) -> DPSettings:
        """The settings ``values`` give in ``spelling``; an absent key takes the default, a
        "derive it" value (0 for ``delta``) means unset, and a value of the wrong type is an
        error naming the key as written."""
        converted = {}
        for setting in SETTINGS:
            key = spelling.key(setting.name)
            if key not in values:
                continue
            value = values[key]
            try:
                unset = not isinstance(value, bool) and value in setting.derived_when
                converted[setting.attribute] = None if unset else setting.kind(value)
            except (TypeError, ValueError) as err:
                raise MoeHealthInputError(f"DP setting '{spelling.shown(setting.name)}': "
                                          f"{err}") from None
        try:
            return cls(**converted)
        except InvalidSetting as err:  # named as the user wrote it
            raise InvalidSetting(err.name, err.reason, spelling) from None

    def node_config(self) -> dict[str, bool | float | int | str]:
        """The same settings as a SuperNode's ``dp-*`` node-config keys (unset ones left out)."""
        return {NODE_CONFIG.key(s.name): getattr(self, s.attribute) for s in SETTINGS
                if getattr(self, s.attribute) is not None}

    @property
    def without_noise(self) -> bool:
        """``target-epsilon = inf``: the DP-SGD recipe (Poisson sampling, clipping, the DP model)
        with no noise and so no privacy guarantee; for measuring what the noise costs in
        simulation (a hospital's site configuration refuses it)."""
        return self.enabled and math.isinf(self.target_epsilon)

    def delta_for(self, n_train: int) -> float:
        return self.delta if self.delta is not None else min(1.0 / max(n_train, 1), 1e-5)


DPSettings = make_dataclass(
    "DPSettings", [(s.attribute, Any, field(default=s.default)) for s in SETTINGS],
    bases=(_DPSettingsBase,), frozen=True)
DPSettings.__module__ = __name__  # Python 3.11's make_dataclass has no module argument
DPSettings.__doc__ = "A site's own DP configuration, one field per :data:`SETTINGS` entry."


class InvalidSetting(MoeHealthInputError):
    """A DP setting out of its range; ``from_mapping`` names it as the user wrote it."""

    def __init__(self, name: str, reason: str, spelling: Spelling | None = None) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"DP setting '{spelling.shown(name) if spelling else name}': {reason}")


def _validate(settings: DPSettings) -> None:
    """What an enabled site's settings must satisfy (raises :class:`InvalidSetting`)."""
    for setting in SETTINGS:
        value = getattr(settings, setting.attribute)
        if setting.choices and value not in setting.choices:
            raise InvalidSetting(setting.name, f"must be one of {', '.join(setting.choices)}, "
                                 f"got {value!r}")
    for name in ("max-grad-norm", "delta", "noise-multiplier"):
        value = getattr(settings, name.replace("-", "_"))
        if value is not None and not math.isfinite(value):
            raise InvalidSetting(name, f"must be a finite number, got {value}")
    for name in ("target-epsilon", "max-grad-norm", "noise-multiplier", "public-weight"):
        value = getattr(settings, name.replace("-", "_"))
        if value is not None and value <= 0:
            raise InvalidSetting(name, f"must be positive, got {value}")
    for name in ("planned-rounds", "batch-size"):  # 0 = the run's
        if getattr(settings, name.replace("-", "_")) < 0:
            raise InvalidSetting(name, f"must be >= 0 (0: the run's), got "
                                 f"{getattr(settings, name.replace('-', '_'))}")
    if settings.delta is not None and not 0 < settings.delta < 1:
        raise InvalidSetting("delta", f"must be in (0, 1), got {settings.delta}")
    if settings.without_noise and settings.noise_multiplier is not None:
        raise InvalidSetting("noise-multiplier", "target-epsilon inf (no noise) and a noise "
                             "multiplier contradict each other; set one")


def node_config_keys() -> tuple[str, ...]:
    """Every ``dp-*`` key a SuperNode's node config may carry."""
    return tuple(NODE_CONFIG.key(s.name) for s in SETTINGS)


def settings_markdown() -> str:
    """README's table of the DP settings (tests/test_settings.py keeps README equal to it)."""
    def shown(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)
    keys = " / ".join(f"{s.where} `{s.shown('<name>')}`" for s in SPELLINGS)
    lines = [f"| setting ({keys}) | default | unit | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        meaning = s.help + (f". {s.detail}" if s.detail else "")
        lines.append(f"| `{s.name}` | {s.shown_default or shown(s.default)} | {s.unit or '-'} | "
                     f"{meaning} |")
    return "\n".join(lines) + "\n"


def dp_model_config(config: ModelConfig) -> ModelConfig:
    """The model a DP site trains: the per-sample-gradient LSTM and the per-sample balance
    regularizer."""
    return replace(config, lstm="dp", balance="kl")

