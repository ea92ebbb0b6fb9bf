"""Gate health from the sites' evaluation replies: how the global gate spreads its routing weight.

Per modality combination of the samples, the mean routing weight of each expert (sites' means
weighted by their number of test samples of that combination), each expert's overall share, and
a warning when a combination sends most of its weight to experts of modalities its samples lack
(e.g. samples without notes routed to ``experts.ehr+notes``).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from shared_model.protocol import EvaluateReply, Phase

log = logging.getLogger(__name__)
MISROUTED = 0.5  # share of a combination's weight on experts it cannot inform that is flagged


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


def warn_misrouting(rnd: int, health: dict[str, object], phase: Phase = Phase.JOINT) -> None:
    """A warning per misrouted combination, in joint rounds only: expert pre-training never
    trains the gate, so its routing then says nothing."""
    if phase != Phase.JOINT:
        return
    for combo, share in dict(health["misrouted"]).items():  # type: ignore[arg-type]
        log.warning("round %d: gate sends %.2f of the weight of %s samples to experts of "
                    "modalities they lack", rnd, share, combo)
