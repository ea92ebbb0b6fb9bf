"""Model configuration: one frozen dataclass, validated, with the paper's defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from shared_model.modalities import MODALITIES, Modality

FUSIONS = ("moe", "mlp")
MISSING = ("learned", "zero")
GATES = ("learned", "uniform")
GATE_MASKS = ("none", "available")
GATE_TEMPERATURES = ("fixed", "learned")
BALANCE = ("switch", "kl")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and variants of MoE-Health.

    ``fusion="mlp"`` is the single-MLP fusion baseline (``head.*`` instead of gate and experts);
    ``modalities`` restricts the inputs (unimodal baselines); ``missing="zero"`` replaces the
    learnable indicator embeddings by zero padding; ``gate="uniform"`` is the static gate;
    ``top_k=1`` is top-1 routing. ``gate_mask="available"`` (the default, chosen on arm 2's
    validation: README.md, "Federation") lets the gate choose only experts whose modality
    combination the sample has; ``"none"`` is the paper's gate (any expert).
    ``gate_temperature="learned"`` (the default, chosen on the same validation split) divides the
    gate's scores by one learned temperature; the paper's gate: ``"fixed"``, temperature 1.
    ``lstm="dp"`` builds :class:`PerSampleLSTM` (``nn.LSTM``'s parameters, names and outputs,
    with per-sample gradients for DP-SGD).
    """

    ehr_variables: int = 17
    ehr_hours: int = 48
    demographics: int = 2
    notes_dim: int = 384
    cxr_dim: int = 1024
    hidden: int = 64
    lstm_hidden: int = 64
    gate_hidden: int = 64
    expert_hidden: int = 64
    dropout: float = 0.1
    top_k: int = 2
    fusion: str = "moe"
    missing: str = "learned"
    gate: str = "learned"
    gate_mask: str = "available"
    gate_temperature: str = "learned"
    balance: str = "switch"
    modalities: tuple[str, ...] = tuple(m.value for m in MODALITIES)
    lstm: str = "torch"

    def __post_init__(self) -> None:
        mods = tuple(Modality.parse(m).value for m in self.modalities)
        object.__setattr__(self, "modalities", tuple(m.value for m in MODALITIES if m.value in mods))
        for name, allowed in (("fusion", FUSIONS), ("missing", MISSING), ("gate", GATES),
                              ("gate_mask", GATE_MASKS), ("gate_temperature", GATE_TEMPERATURES),
                              ("balance", BALANCE), ("lstm", ("torch", "dp"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.modalities:
            raise ValueError("model.modalities must name at least one modality")
        if not 1 <= self.top_k <= 7:
            raise ValueError(f"model.top_k must be between 1 and 7, got {self.top_k}")
        if min(self.hidden, self.lstm_hidden, self.gate_hidden, self.expert_hidden) < 1:
            raise ValueError("model sizes must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a (possibly partial) mapping; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        if isinstance(values.get("modalities"), str):
            values["modalities"] = tuple(values["modalities"].replace("+", ",").split(","))
        return cls(**values)


def model_config_from_run_config(run_config: dict[str, Any], prefix: str = "model.") -> ModelConfig:
    """``model.top-k = 2`` style keys (Flower run-config, kebab-case) -> ModelConfig."""
    values = {k[len(prefix):].replace("-", "_"): v for k, v in run_config.items()
              if k.startswith(prefix)}
    return ModelConfig.from_dict(values)
