"""The paper's baselines and ablations as named variants of one model and one training loop."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shared_model.config import ModelConfig
from shared_model.errors import MoeHealthInputError
from shared_model.run_config import MODEL_PREFIX, pyproject_defaults

_DEFAULTS = pyproject_defaults()


@dataclass(frozen=True)
class Variant:
    """A model configuration plus whether experts are pre-trained on their own combination."""

    description: str
    model: dict = field(default_factory=dict)
    pretrain_experts: bool = True

    def run_config(self) -> dict[str, object]:
        """The same variant as run-config overrides of a federated run."""
        out: dict[str, object] = {
            MODEL_PREFIX + k.replace("_", "-"): ",".join(v) if isinstance(v, tuple) else v
            for k, v in self.model.items()}
        if not self.pretrain_experts:
            out["pretrain-rounds"] = 0
        return out


# the paper's routing (top-2 over any expert), named so no change of the defaults changes it
PAPER = {"gate_mask": "none", "top_k": 2, "gate_temperature": "fixed"}

VARIANTS: dict[str, Variant] = {
    "moe-health": Variant("MoE-Health with this project's defaults (pyproject.toml): the paper's "
                          "model with the gate restricted to experts of the modalities the stay "
                          "has and a learned gate temperature, chosen on arm 2's validation "
                          "split", {},
                          _DEFAULTS["pretrain-rounds"] > 0),
    "moe-health-paper": Variant("MoE-Health exactly as in the paper: learned indicators, top-2 "
                                "gate over every expert, pre-trained experts", PAPER),
    "unimodal-ehr": Variant("EHR only, MLP head", {"fusion": "mlp", "modalities": ("ehr",)}, False),
    "unimodal-notes": Variant("notes only, MLP head", {"fusion": "mlp", "modalities": ("notes",)},
                              False),
    "unimodal-cxr": Variant("chest X-ray only, MLP head", {"fusion": "mlp", "modalities": ("cxr",)},
                            False),
    "moe-health-masked": Variant("the paper's MoE-Health with the gate restricted to experts of "
                                 "the modalities the sample has (the default's routing)",
                                 {**PAPER, "gate_mask": "available"}),
    "mlp-fusion": Variant("single-MLP fusion, no experts", {"fusion": "mlp"}, False),
    "no-missing-indicator": Variant("the paper's MoE-Health with zero padding instead of learned "
                                    "indicators", {**PAPER, "missing": "zero"}),
    "static-gate": Variant("the paper's MoE-Health with uniform expert weights instead of a "
                           "learned gate", {**PAPER, "gate": "uniform"}),
    "top-1": Variant("the paper's MoE-Health with top-1 routing", {**PAPER, "top_k": 1}),
    "dense-gate": Variant("the paper's MoE-Health with a dense learned gate: every expert "
                          "weighted (top-7)", {**PAPER, "top_k": 7}),
    "no-pretrain": Variant("the paper's MoE-Health with generic experts: no expert "
                           "pre-training", PAPER, False),
    "dense-no-pretrain": Variant("a dense learned gate (every expert weighted) and no expert "
                                 "pre-training", {**PAPER, "top_k": 7}, False),
    "masked-dense-no-pretrain": Variant("a dense learned gate over the experts of the modalities "
                                        "the stay has, no expert pre-training",
                                        {"gate_mask": "available", "top_k": 7,
                                         "gate_temperature": "fixed"}, False),
    "masked-learned-temperature": Variant("the default's routing (top-2 over the experts of the "
                                          "modalities the stay has) with a learned gate "
                                          "temperature", {"gate_mask": "available", "top_k": 2,
                                                          "gate_temperature": "learned"}),
}


# the paper's model and its ablations, then this project's default (``moe-health``)
FEDERATED_ABLATIONS: tuple[str, ...] = ("moe-health-paper", "no-missing-indicator", "static-gate",
                                        "top-1", "no-pretrain", "mlp-fusion", "unimodal-ehr",
                                        "dense-gate", "moe-health")


def check_variants(names: Iterable[str]) -> list[str]:
    """``names`` as a list; an unknown name is one error naming the known ones."""
    names = list(names)
    for name in names:
        if name not in VARIANTS:
            raise MoeHealthInputError(f"unknown variant '{name}' (choose from "
                                      f"{', '.join(VARIANTS)})")
    return names


def is_moe(name: str) -> bool:
    """Whether a variant is a mixture of experts over every modality (a candidate default)."""
    model = VARIANTS[name].model
    return model.get("fusion", "moe") == "moe" and "modalities" not in model


def variant_model_config(name: str, base: ModelConfig | None = None) -> ModelConfig:
    """ModelConfig of a named variant on top of ``base`` (default model sizes)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant '{name}' (choose from {', '.join(VARIANTS)})")
    values = (base or ModelConfig()).to_dict()
    values.update(VARIANTS[name].model)
    return ModelConfig.from_dict(values)


# heterogeneity: how a federation aggregates; "+fedadam" adds Flower's FedAdam on the server with
# its server-lr chosen on validation
AGGREGATIONS = ("modality-aware", "fedavg-all", "modality-aware+fedadam", "fedavg-all+fedadam")


def aggregation_run_config(aggregation: str, server_lr: float | None = None) -> dict[str, object]:
    """Run-config keys of one ``AGGREGATIONS`` entry."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{aggregation}' (choose from "
                         f"{', '.join(AGGREGATIONS)})")
    rule, _, optimizer = aggregation.partition("+")
    config: dict[str, object] = {"aggregation-rule": rule}
    if optimizer:
        config |= {"server-optimizer": optimizer, "server-lr": server_lr}
    return config
