"""The reachable ceiling: the best outcome probability given only what the written data shows.

The true probability (``oracle.csv``'s ``mortality`` etc.) depends on latent states that no input
shows exactly. The reachable ceiling replaces it with ``E[p | rendered signals]``: a logistic model
per task, fitted on a large independent draw of the same generator (its own identifier block and
seed, never the population it scores), on the signals each modality renders (``signals.py``):

- EHR: the acute latent ``z_ehr``, ``frailty`` and age, taken as fully observed (dense vitals and
  labs show them), so the EHR side of the ceiling is generous;
- notes: the grades of the findings a report in the window states, and its chest-film grade;
- chest X-ray: the findings the in-window film shows.

Two ceilings per task: ``<task>_reachable`` (all modalities, with their availability) and
``<task>_reachable_ehr`` (EHR alone). Each is fitted by weighting every drawn stay by its true
probability (label 1) and its complement (label 0), which estimates ``E[p | signals]`` without
outcome noise.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from simulation.synth.signals import NOTE_FINDINGS

TASK_PROBABILITIES = {"mortality": "p_mortality", "los": "p_los", "readmission": "p_readmission"}
FIT_PATIENTS = 10_000
FIT_ID_BLOCK = 9  # identifiers of the fitting draw: never a written population's
FIT_SEED = 7_919  # one fitting draw for every population: the same ceiling model everywhere


def ehr_signals(stays: pd.DataFrame) -> np.ndarray:
    """What the EHR shows: acute latent, frailty, age (centred)."""
    return np.column_stack([stays["z_ehr"], stays["frailty"], (stays["age"] - 65) / 16])


def all_signals(stays: pd.DataFrame) -> np.ndarray:
    """EHR signals plus the report's grades and the film's findings, zero where absent."""
    report = stays["has_report"].to_numpy(float)
    film = stays["has_film"].to_numpy(float)
    grades = stays[[f"note_grade_{i}" for i in range(NOTE_FINDINGS)]].to_numpy(float)
    mean_grade = grades.mean(axis=1) - 2.5
    columns = [ehr_signals(stays), report, report * mean_grade, report * mean_grade ** 2,
               report * film * (stays["cxr_report_grade"].to_numpy(float) - 1.5), film]
    for name in ("cardio", "effusion", "opacity", "device"):
        columns.append(film * (stays[f"film_{name}"].to_numpy(float) - 0.5))
    return np.column_stack(columns)


def unit_columns(stays: pd.DataFrame) -> np.ndarray:
    """One-hot of the stay's care unit (written in icustays: what a hospital knows)."""
    from simulation.synth.population import CAREUNITS

    return np.column_stack([(stays["first_careunit"] == u).to_numpy(float)
                            for u in list(CAREUNITS)[1:]])


def hospital_ehr_signals(stays: pd.DataFrame) -> np.ndarray:
    """``hospitals`` arm, EHR side: the EHR signals and the unit (its case mix)."""
    return np.column_stack([ehr_signals(stays), unit_columns(stays)])


def hospital_signals(stays: pd.DataFrame) -> np.ndarray:
    """``hospitals`` arm, everything written: the first arm's signals, the unit, and the film
    findings and report grade of post-operative (CVICU) films apart (there they mean less);
    availability is in both (its indicator columns), the house styles hide nothing."""
    from simulation.synth.hospitals import CVICU

    postop = (stays["first_careunit"] == CVICU).to_numpy(float)
    film = stays["has_film"].to_numpy(float)
    extra = [postop * film * (stays[f"film_{name}"].to_numpy(float) - 0.5)
             for name in ("effusion", "device")]
    extra.append(postop * film * (stays["cxr_report_grade"].to_numpy(float) - 1.5))
    return np.column_stack([all_signals(stays), unit_columns(stays), *extra])


def _fit(features: np.ndarray, probability: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([features, features])
    y = np.r_[np.ones(len(features)), np.zeros(len(features))]
    weights = np.r_[probability, 1 - probability]
    return LogisticRegression(C=100.0, max_iter=2000).fit(x, y, sample_weight=weights)


@functools.cache
def fit_ceilings(arm: str = "mcar") -> dict[str, object]:
    """Per ``<task>_reachable`` and ``<task>_reachable_ehr``, a fitted model of E[p | signals],
    on a fitting draw of the same generator arm (``hospitals``: with the unit, see
    :func:`hospital_signals`)."""
    from simulation.synth.hospitals import MCAR
    from simulation.synth.population import build_population

    draw = build_population(np.random.default_rng(FIT_SEED), FIT_PATIENTS,
                            id_block=FIT_ID_BLOCK, arm=arm).stays
    everything, ehr = ((all_signals, ehr_signals) if arm == MCAR
                       else (hospital_signals, hospital_ehr_signals))
    models: dict[str, object] = {}
    for task, column in TASK_PROBABILITIES.items():
        probability = draw[column].to_numpy()
        models[f"{task}_reachable"] = (everything, _fit(everything(draw), probability))
        models[f"{task}_reachable_ehr"] = (ehr, _fit(ehr(draw), probability))
    return models


def reachable_probabilities(stays: pd.DataFrame, arm: str = "mcar") -> pd.DataFrame:
    """The reachable-ceiling columns of ``oracle.csv`` for ``stays`` of generator ``arm``."""
    out = pd.DataFrame(index=stays.index)
    for name, (signals, model) in fit_ceilings(arm).items():
        out[name] = model.predict_proba(signals(stays))[:, 1]
    return out
