"""End-of-run tables (Markdown) from the per-site evaluation metrics."""

from __future__ import annotations

import math


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def cross_site_table(per_site: dict[str, dict[str, float]], pooled: dict[str, float] | None) -> str:
    """Global model on each site's test split, plus the pooled test set when evaluated."""
    lines = ["| site | test n | AUROC | AUPRC | F1 | loss |", "|---|---|---|---|---|---|"]
    for site, m in sorted(per_site.items()):
        lines.append(f"| {site} | {int(m.get('num-examples', 0))} | {_fmt(m.get('test.auroc'))} | "
                     f"{_fmt(m.get('test.auprc'))} | {_fmt(m.get('test.f1'))} | "
                     f"{_fmt(m.get('test.loss'))} |")
    if pooled:
        lines.append(f"| pooled (centralized eval) | {int(pooled.get('pooled.n', 0))} | "
                     f"{_fmt(pooled.get('pooled.auroc'))} | {_fmt(pooled.get('pooled.auprc'))} | "
                     f"{_fmt(pooled.get('pooled.f1'))} | {_fmt(pooled.get('pooled.loss'))} |")
    return "\n".join(lines) + "\n"
