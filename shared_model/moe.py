"""MoE-Health: modality encoders, missing-modality indicators, a top-k gate over one expert per
modality combination (arXiv 2508.21793).

Parameter names state how the server aggregates them: ``encoders.<modality>.*``,
``missing.<modality>.*``, ``gate.*``, ``experts.<combo>.*`` (combo in the canonical order
ehr, notes, cxr joined by ``+``) and ``head.*`` for the single-MLP fusion baseline.
Experts are computed densely and then masked, which Opacus' per-sample gradients require.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from shared_model.config import ModelConfig
from shared_model.encoders import EHREncoder, FeatureProjection, mlp
from shared_model.modalities import COMBINATIONS, MODALITIES

Phase = Literal["pretrain", "joint"]
# available flags (ehr, notes, cxr) as bits 1, 2, 4 -> index into COMBINATIONS (-1: none)
_BITS_TO_COMBO = [-1] + [COMBINATIONS.index("+".join(
    m.value for i, m in enumerate(MODALITIES) if bits >> i & 1)) for bits in range(1, 8)]

# [E, M]: 1 where expert (combination) e uses modality m
_COMBO_USES = torch.tensor([[float(m.value in combo.split("+")) for m in MODALITIES]
                            for combo in COMBINATIONS])


@dataclass
class MoEOutput:
    """Logits plus what routing analysis needs: gate probabilities, weights and chosen experts."""

    logits: torch.Tensor  # [B]
    gate_probs: torch.Tensor | None  # [B, E] softmax over experts, before top-k
    weights: torch.Tensor | None  # [B, E] renormalized over the chosen experts, 0 elsewhere
    chosen: torch.Tensor | None  # [B, k] expert indices
    combo: torch.Tensor  # [B] index of the sample's modality combination in COMBINATIONS


def combination_index(available: torch.Tensor) -> torch.Tensor:
    """Index in :data:`COMBINATIONS` of each sample's available-modality set ([B, 3] -> [B])."""
    # elementwise, not a matmul: CUDA has no integer matmul
    bits = ((available > 0.5).long() * torch.tensor([1, 2, 4], device=available.device)).sum(-1)
    return torch.tensor(_BITS_TO_COMBO, device=available.device)[bits]


class GateTemperature(nn.Module):
    """Divides gate scores by a learned temperature ``exp(-w)`` (``w`` starts at 0: temperature
    1). ``w`` is the weight of a bias-free ``Linear(1, 1)`` applied to a constant 1, so Opacus
    computes its per-sample gradients like any linear layer's."""

    def __init__(self) -> None:
        super().__init__()
        self.log_inverse = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.log_inverse.weight)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        one = torch.ones((scores.shape[0], 1), device=scores.device, dtype=scores.dtype)
        return scores * self.log_inverse(one).exp()


class MoEHealth(nn.Module):
    """The MoE-Health model; ``phase`` selects expert pre-training or joint training."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.phase: Phase = "joint"
        c = config
        encoders: dict[str, nn.Module] = {}
        if "ehr" in c.modalities:
            encoders["ehr"] = EHREncoder(c.ehr_variables, c.demographics, c.lstm_hidden, c.hidden,
                                         c.lstm)
        if "notes" in c.modalities:
            encoders["notes"] = FeatureProjection(c.notes_dim, c.hidden, c.dropout)
        if "cxr" in c.modalities:
            encoders["cxr"] = FeatureProjection(c.cxr_dim, c.hidden, c.dropout)
        self.encoders = nn.ModuleDict(encoders)
        if c.missing == "learned":
            # Linear(1, d) applied to the missing flag: a learnable vector that only samples
            # lacking the modality touch (exact under Opacus' per-sample gradients).
            self.missing = nn.ModuleDict({m: nn.Linear(1, c.hidden, bias=False)
                                          for m in c.modalities})
        fused = c.hidden * len(c.modalities)
        if c.fusion == "mlp":
            self.head = mlp(fused, c.expert_hidden, 1, c.dropout)
            return
        if c.gate == "learned":
            self.gate = mlp(fused, c.gate_hidden, len(COMBINATIONS), c.dropout)
            if c.gate_temperature == "learned":
                self.gate.append(GateTemperature())  # gate.4.*: aggregated with the gate
        self.experts = nn.ModuleDict({combo: mlp(fused, c.expert_hidden, 1, c.dropout)
                                      for combo in COMBINATIONS})

    def set_phase(self, phase: Phase) -> None:
        if phase not in ("pretrain", "joint"):
            raise ValueError(f"phase must be 'pretrain' or 'joint', got {phase!r}")
        self.phase = phase

    def embed(self, ehr: torch.Tensor, ehr_mask: torch.Tensor, demographics: torch.Tensor,
              notes: torch.Tensor, cxr: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Concatenated modality embeddings [B, hidden * M]; missing ones replaced."""
        parts = []
        for m in self.config.modalities:
            col = [x.value for x in MODALITIES].index(m)
            has = available[:, col:col + 1]
            if m == "ehr":
                h = self.encoders["ehr"](ehr, ehr_mask, demographics)
            else:
                h = self.encoders[m](notes if m == "notes" else cxr)
            h = h * has
            if self.config.missing == "learned":
                h = h + self.missing[m](1.0 - has)
            parts.append(h)
        return torch.cat(parts, dim=-1)

    def forward(self, ehr: torch.Tensor, ehr_mask: torch.Tensor, demographics: torch.Tensor,
                notes: torch.Tensor, cxr: torch.Tensor, available: torch.Tensor) -> MoEOutput:
        z = self.embed(ehr, ehr_mask, demographics, notes, cxr, available)
        combo = combination_index(available)
        if self.config.fusion == "mlp":
            return MoEOutput(self.head(z).squeeze(-1), None, None, None, combo)
        expert_logits = torch.cat([self.experts[c](z) for c in COMBINATIONS], dim=-1)  # [B, E]
        if self.phase == "pretrain":
            own = nn.functional.one_hot(combo.clamp(min=0), len(COMBINATIONS)).to(z.dtype)
            return MoEOutput((expert_logits * own).sum(-1), None, own, combo.unsqueeze(-1), combo)
        probs, weights, chosen = self.route(z, self._allowed(available))
        return MoEOutput((expert_logits * weights).sum(-1), probs, weights, chosen, combo)

    def _allowed(self, available: torch.Tensor) -> torch.Tensor | None:
        """[B, E] True where the expert's combination uses only modalities the sample has
        (``gate_mask="available"``); None: every expert allowed."""
        if self.config.gate_mask == "none":
            return None
        lacks = (available <= 0.5).to(available.dtype)  # [B, M]
        allowed = (lacks @ _COMBO_USES.to(available.device, available.dtype).T) == 0
        return allowed | ~allowed.any(-1, keepdim=True)  # no modality at all: any expert

    def route(self, z: torch.Tensor, allowed: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gate probabilities (over the ``allowed`` experts), top-k weights renormalized to sum
        to 1, and chosen experts."""
        n = len(COMBINATIONS)
        if self.config.gate == "uniform":
            scores = torch.zeros((z.shape[0], n), device=z.device, dtype=z.dtype)
        else:
            scores = self.gate(z)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.config.gate == "uniform":
            chosen = torch.arange(n, device=z.device).expand(z.shape[0], n)
            return probs, probs, chosen
        top, chosen = probs.topk(self.config.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, chosen, top / top.sum(-1, keepdim=True))
        return probs, weights, chosen


def build_model(config: ModelConfig | dict | None = None) -> MoEHealth:
    """The one constructor every caller uses; ``build_model()`` gives the default MoE-Health."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return MoEHealth(config or ModelConfig())
