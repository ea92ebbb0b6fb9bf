"""The model card of an experiment (``moehealth experiment NAME``), TRIPOD+AI items as for a run
(server/model_card.py): filled from the data configuration, the results table and the
provenance; what an experiment cannot know is marked as such. Written beside ``results.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from server.model_card import (
    DATA_PREPARATION,
    OUTCOMES,
    PARTICIPANTS,
    PREDICTORS,
    SYNTHETIC_LIMITATION,
    UNKNOWN_ITEMS,
    write_model_card,
)
from simulation.prepare import FederationData
from simulation.results_store import Provenance

DESIGNS = {
    "models": "centralized MoE-Health and its variants against tuned tabular baselines",
    "yardstick": "reachable ceilings and tuned tabular baselines on the cached inputs",
    "robustness": "every model with a modality removed from a fraction of the test stays",
    "external": "leave one hospital out: trained on the other sites pooled, tested on the "
                "held-out site's stays",
    "fl-vs-central": "federated against pooled training and each site alone",
    "ablations": "the paper's ablations, federated",
    "heterogeneity": "modality-aware against plain aggregation under modality skew",
    "privacy-utility": "AUROC against the DP budget",
    "dp-recipe": "DP recipes at one budget, chosen on the sites' pooled validation split (the "
                 "test set is not scored)",
    "personalization": "each site fine-tunes the federated model on its own data; scored on its "
                       "own test split and on the independent test population",
}
MISSING_DATA = ("MoE-Health: a learned per-modality indicator replaces a missing modality (the "
                "zero-padding and MLP-fusion variants as named); tabular baselines: zeros plus "
                "one missingness flag per modality; pattern submodels: one logistic regression "
                "per missingness pattern")


def _interval(row: pd.Series, value: str, low: str, high: str) -> list[float]:
    return [float(row[value]), float(row[low]), float(row[high])]


def _named(row: pd.Series) -> str:
    seed = row.get("seed")
    return str(row["model"]) + ("" if pd.isna(seed) or seed == "" else f" (seed {int(seed)})")


def performance(frame: pd.DataFrame) -> dict[str, Any]:
    """AUROC [95% CI] per model (and seed) on the test set; external validation: per held-out
    site; robustness: on the complete test set. Other experiments point to their tables."""
    if "external" in frame:
        return {f"{r.model}, {r.held_out} held out": _interval(
            r, "external", "external_low", "external_high") for _, r in frame.iterrows()}
    if not {"model", "auroc", "auroc_low", "auroc_high"} <= set(frame.columns):
        return {"results": "see results.md beside this card"}
    if "fraction_removed" in frame:
        frame = frame[frame.fraction_removed == 0].drop_duplicates(["task", "model", "seed"])
    out: dict[str, Any] = {}
    for task, rows in frame.groupby("task", sort=False):
        first = rows.iloc[0]
        out[f"{task}: test set"] = (f"{first.test_set}, n = {int(first.n)}, events = "
                                    f"{int(first.positives)}")
        out |= {f"{task}: {_named(r)}": _interval(r, "auroc", "auroc_low", "auroc_high")
                for _, r in rows.iterrows()}
    return out


def experiment_card(name: str, data: FederationData, frame: pd.DataFrame,
                    provenance: Provenance) -> dict[str, Any]:
    """TRIPOD+AI items -> what this experiment can say about each."""
    tasks = [str(t) for t in frame["task"].unique()] if "task" in frame else []
    outcome = "; ".join(OUTCOMES.get(t, t) for t in tasks) or "see results.md"
    synthetic = data.mimic_iv is None
    return {
        "1 title / objective": f"{DESIGNS.get(name, name)}; predicting {outcome} at ICU intime "
                               "+ 48 h",
        "5 data source": data.describe() + (f" (preset {provenance.preset})"
                                            if provenance.preset else ""),
        "6 participants": PARTICIPANTS,
        "7 data preparation": DATA_PREPARATION,
        "8 outcome": outcome,
        "9 predictors": PREDICTORS,
        "11 missing data": MISSING_DATA,
        "12 analytical methods": {
            "design": DESIGNS.get(name, name),
            "hyper-parameters": "chosen on the validation split (never on test); per model in "
                                "results.csv",
            "seeds": ", ".join(map(str, provenance.seeds)) or "deterministic"},
        "12 evaluation": ("the sites' pooled validation split only (a choice of recipe; the "
                          "test set is not scored)" if name == "dp-recipe" else
                          "the independent test population when the preset has one, else the "
                          "pooled test split; 95% bootstrap intervals (paired for differences, in "
                          "results.md)"),
        "20 performance": performance(frame),
        "limitations": SYNTHETIC_LIMITATION if synthetic else
        "single data source (MIMIC, one hospital system); sites are partitions of it",
        **UNKNOWN_ITEMS,
        "provenance": provenance.line(),
    }


def write_experiment_card(out: Path, name: str, data: FederationData, frame: pd.DataFrame,
                          provenance: Provenance) -> str:
    """``model_card.json`` and ``model_card.md`` in the experiment's folder."""
    return write_model_card(out, experiment_card(name, data, frame, provenance), "experiment")
