"""Training loss: binary cross-entropy plus alpha times a load-balancing term.

Load balancing (Switch Transformer form, the paper's non-DP default), over a batch of B samples
and E experts with top-k routing::

    L_bal = E * sum_e f_e * P_e,   f_e = (1 / (B k)) * #{b : e in topk(b)},   P_e = mean_b p_{b,e}

It equals 1 under uniform routing and E when every sample goes to one expert. It is a batch
statistic, so one patient's gradient depends on the others: under DP-SGD use ``balance="kl"``,
the per-sample ``L_kl = mean_b KL(p_b || uniform)``, which keeps per-sample gradients separable.

    L = BCE(logits, y) + alpha * L_bal
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from shared_model.moe import MoEOutput


def switch_balance_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``E * sum_e f_e P_e`` (see module docstring)."""
    n = probs.shape[-1]
    routed = torch.zeros_like(probs).scatter(-1, chosen, 1.0)
    f = routed.sum(0) / routed.sum()
    return n * (f.detach() * probs.mean(0)).sum()


def kl_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """Mean over samples of KL(p_b || uniform) = log E - H(p_b); zero for uniform gates."""
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return (math.log(probs.shape[-1]) - entropy).mean()


def moe_loss(out: MoEOutput, labels: torch.Tensor, alpha: float = 0.01,
             balance: str = "switch") -> torch.Tensor:
    """BCE plus ``alpha`` times the chosen balance term (no balance term without a learned gate)."""
    loss = F.binary_cross_entropy_with_logits(out.logits, labels)
    if out.gate_probs is None or alpha == 0 or out.chosen is None:
        return loss
    if balance == "kl":
        return loss + alpha * kl_balance_loss(out.gate_probs)
    return loss + alpha * switch_balance_loss(out.gate_probs, out.chosen)
