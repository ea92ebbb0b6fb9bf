"""PNG plots for reports (matplotlib, headless): one colour per site in every plot, integer
round ticks, legends outside the data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from shared_model.modalities import COMBINATIONS  # noqa: E402

POOLED_COLOUR = "black"
Series = dict[str, list[tuple[int, float | None]]]


def site_colours(names: list[str]) -> dict[str, str]:
    """A fixed colour per site (sorted names -> tab10/tab20), the same in every plot of a report."""
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    return {name: matplotlib.colors.to_hex(palette[i % len(palette)])
            for i, name in enumerate(sorted(names))}


def round_plot(series: Series, ylabel: str, title: str, path: Path, *,
               colours: dict[str, str] | None = None, pretrain_end: int | None = None) -> Path:
    """One line per series over rounds; a dashed marker where expert pre-training ends."""
    colours = colours or {}
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, points in sorted(series.items()):
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name,
                    color=colours.get(name, POOLED_COLOUR))
    if pretrain_end:
        ax.axvline(pretrain_end + 0.5, color="grey", linestyle="--", linewidth=1,
                   label="end of expert pre-training")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def reliability_plot(bins: dict[str, list[float]], brier: float | None, title: str,
                     path: Path) -> Path:
    """Observed rate against mean predicted probability per equal-count bin, with the diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(max(bins["predicted"]), max(bins["observed"]), 0.05) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1,
            label="perfect calibration")
    sizes = 20 + 80 * np.asarray(bins["count"]) / max(bins["count"])
    ax.scatter(bins["predicted"], bins["observed"], s=sizes, color="tab:blue", zorder=3,
               label="equal-count bins (size: samples)")
    ax.plot(bins["predicted"], bins["observed"], color="tab:blue", linewidth=1)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title(title + (f"\nBrier score {brier:.3f}" if brier is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def decision_curve_plot(curve: dict[str, list[float]], title: str, path: Path) -> Path:
    """Net benefit of the model, of treating all and of treating none over risk thresholds."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(curve["threshold"], curve["model"], color="tab:blue", label="model")
    ax.plot(curve["threshold"], curve["treat_all"], color="tab:orange", linestyle="--",
            label="treat all")
    ax.axhline(0, color="grey", linewidth=1, label="treat none")
    top = max(max(curve["model"]), max(curve["treat_all"]), 0.01)
    ax.set_ylim(-0.1 * top, 1.1 * top)  # treat-all falls far below 0 at high thresholds
    ax.set_xlabel("risk threshold")
    ax.set_ylabel("net benefit (true positives per patient)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def routing_heatmap(table: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Rows: modality combination of the samples; columns: experts; cells: mean routing weight."""
    rows = [c for c in COMBINATIONS if c in table]
    grid = np.array([[table[r][e] for e in COMBINATIONS] for r in rows])
    fig, ax = plt.subplots(figsize=(10, 0.7 * len(rows) + 2.5))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(COMBINATIONS)), COMBINATIONS, fontsize=10, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows, fontsize=10)
    ax.set_xlabel("expert")
    ax.set_ylabel("modalities the samples have")
    for i in range(len(rows)):
        for j in range(len(COMBINATIONS)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if grid[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="mean routing weight")
    ax.set_title(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
