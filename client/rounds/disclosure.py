"""Statistical disclosure control of what a site releases (rule in deploy/README.md, "What leaves
a hospital"). The minimum cell size ``c`` applies to the whole release, not to each value alone:

1. **Cells.** A split's patients fall into modality combinations. A combination with at least
   ``c`` patients in the split is a *released cell*; the others are suppressed. A suppressed cell
   enters no released count or metric (its patients still train the model).
2. **Counts.** Every released count (group weights, ``train-examples``, ``num-examples``,
   per-combination ``n``) is a sum of released cells, so any sum, difference or other
   combination of released counts is a sum of released cells: 0 or at least ``c``, never a
   suppressed cell.
3. **Metrics.** The metrics of a population are released all together or not at all, and only
   when it has at least ``c`` positives and ``c`` negatives: AUROC and ``n`` cannot be solved for
   a small number of positives, and no pattern of present and absent metrics reveals an empty
   class. Per-combination metrics are sent for every released cell of the split or for none, so
   the positives of the whole split minus those of the cells with metrics never isolate a cell
   with few positives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from client.rounds.training import Predictions
from shared_model.modalities import COMBINATIONS


def released_cells(counts: Mapping[str, int], min_cell_size: int) -> dict[str, int]:
    """The combinations with at least ``min_cell_size`` (and at least one) patients."""
    return {combo: n for combo, n in counts.items() if n >= max(min_cell_size, 1)}


def cells_with(cells: Mapping[str, int], modality: str, present: bool = True) -> int:
    """Patients of the released cells that have (``present``) or lack ``modality``."""
    return sum(n for combo, n in cells.items() if (modality in combo.split("+")) == present)


def classes_large_enough(labels: np.ndarray, min_cell_size: int) -> bool:
    """At least ``min_cell_size`` (and at least one) positives and negatives."""
    positives = int(labels.sum())
    return min(positives, len(labels) - positives) >= max(min_cell_size, 1)


def released_mask(pred: Predictions, min_cell_size: int) -> np.ndarray:
    """Which patients are in released cells (rule 1)."""
    combos, sizes = np.unique(pred.combo, return_counts=True)
    keep = combos[(combos >= 0) & (sizes >= max(min_cell_size, 1))]
    return np.isin(pred.combo, keep)


def released_predictions(pred: Predictions, min_cell_size: int) -> Predictions:
    """The predictions of the patients in released cells (rule 1)."""
    mask = released_mask(pred, min_cell_size)
    return replace(pred, probs=pred.probs[mask], labels=pred.labels[mask], combo=pred.combo[mask],
                   weights=None if pred.weights is None else pred.weights[mask],
                   gate_probs=None if pred.gate_probs is None else pred.gate_probs[mask])


def cell_metrics_releasable(pred: Predictions, min_cell_size: int) -> bool:
    """Rule 3 for per-combination metrics: every released cell has enough of both classes."""
    return all(classes_large_enough(pred.labels[pred.combo == c], min_cell_size)
               for c in np.unique(pred.combo))


def cell_sizes(pred: Predictions) -> dict[str, int]:
    """Patients per combination of (released) predictions."""
    combos, sizes = np.unique(pred.combo, return_counts=True)
    return {COMBINATIONS[c]: int(n) for c, n in zip(combos, sizes, strict=True) if c >= 0}
