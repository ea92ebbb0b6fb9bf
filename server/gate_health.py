"""Gate health from the sites' evaluation replies: how the global gate spreads its routing weight.

Per modality combination of the samples, the mean routing weight of each expert (sites' means
weighted by their number of test samples of that combination), each expert's overall share, and
the share of a combination's weight on experts pre-trained on modalities its samples lack.

Only a collapsed gate is a warning: one expert taking nearly all routing weight, so the mixture
acts as one network (the load-balancing loss failed). Routing to an expert of modalities a sample
lacks is not: every expert reads every modality's embedding or its learned missing-indicator, and
on the heterogeneity arm that unmasked routing is what keeps the model robust when a modality is
missing at test time (bench/README.md, arm 2 robustness); it is logged for information. The
default ``model.gate-mask = "available"`` forbids it; with ``"none"`` (the paper's gate) it occurs.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from shared_model.protocol import EvaluateReply, Phase

log = logging.getLogger(__name__)
MISROUTED = 0.5  # share of a combination's weight on experts of modalities it lacks that is noted
COLLAPSED = 0.9  # one expert's share of all routing weight that is a warning


def gate_health(replies: list[EvaluateReply]) -> dict[str, object]:
    """``{"by_combination": {combo: {expert: w}}, "expert_share": {expert: s}, "misrouted":
    {combo: share}}`` over the sites that sent routing tables."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, float] = defaultdict(float)
    for reply in replies:
        for combo, experts in reply.routing.items():
            n = reply.by_combination.get(combo, {}).get("n", 0.0) or 0.0
            counts[combo] += n
            for expert, weight in experts.items():
                sums[combo][expert] += n * weight
    by_combo = {c: {e: w / counts[c] for e, w in experts.items()}
                for c, experts in sums.items() if counts[c] > 0}
    total = sum(counts[c] for c in by_combo)
    share: dict[str, float] = defaultdict(float)
    for combo, experts in by_combo.items():
        for expert, weight in experts.items():
            share[expert] += weight * counts[combo] / total
    misrouted = {c: sum(w for e, w in experts.items() if not set(e.split("+")) <= set(c.split("+")))
                 for c, experts in by_combo.items()}
    return {"by_combination": by_combo, "expert_share": dict(share),
            "misrouted": {c: m for c, m in misrouted.items() if m > MISROUTED}}


def log_gate_health(rnd: int, health: dict[str, object], phase: Phase = Phase.JOINT) -> None:
    """In joint rounds only (expert pre-training never trains the gate): a warning when the gate
    has collapsed onto one expert; an information line per combination routed mostly to
    experts of modalities it lacks."""
    if phase != Phase.JOINT:
        return
    share = dict(health.get("expert_share", {}))  # type: ignore[call-overload]
    if len(share) > 1:
        expert, top = max(share.items(), key=lambda item: item[1])
        if top >= COLLAPSED:
            log.warning("round %d: the gate has collapsed: expert %s takes %.2f of all routing "
                        "weight, so the mixture acts as one network (is the load-balancing loss "
                        "on? run config alpha, model.balance)", rnd, expert, top)
    for combo, misrouted in dict(health["misrouted"]).items():  # type: ignore[arg-type]
        log.info("round %d: gate routes %.2f of the weight of %s samples to experts pre-trained "
                 "on modalities they lack (they read those modalities' missing-indicators)",
                 rnd, misrouted, combo)
