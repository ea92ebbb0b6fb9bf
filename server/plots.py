"""PNG plots for reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from shared_model.modalities import COMBINATIONS  # noqa: E402


def routing_heatmap(table: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Rows: modality combination of the samples; columns: experts; cells: mean routing weight."""
    rows = [c for c in COMBINATIONS if c in table]
    grid = np.array([[table[r][e] for e in COMBINATIONS] for r in rows])
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 2))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(grid.max(), 1e-6))
    ax.set_xticks(range(len(COMBINATIONS)), [f"expert\n{e}" for e in COMBINATIONS], fontsize=8)
    ax.set_yticks(range(len(rows)), [f"samples: {r}" for r in rows], fontsize=8)
    for i in range(len(rows)):
        for j in range(len(COMBINATIONS)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[i, j] < grid.max() / 2 else "black")
    fig.colorbar(im, ax=ax, label="mean routing weight")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
